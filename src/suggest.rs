//! `did you mean` hints for misspelt names (stage kinds, params, classes, benchmarks), shared by every layer.

/// The closest candidate to `name`, if it is close enough to be a likely typo (a transposition, a missing
/// or extra letter, or a long common prefix).
pub fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .filter(|c| *c != name)
        .map(|c| (strsim::osa_distance(name, c), -strsim::jaro_winkler(name, c), c))
        .filter(|(d, jw, _)| *d <= limit || -*jw > 0.88)
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_close_names_only() {
        let names = ["balanced-crop", "center-crop", "augment"];
        assert_eq!(did_you_mean("balanced-corp", names.iter().copied()), Some("balanced-crop"));
        assert_eq!(did_you_mean("augmnet", names.iter().copied()), Some("augment"));
        assert_eq!(did_you_mean("train", names.iter().copied()), None);
    }
}
