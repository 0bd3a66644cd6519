//! QuPath annotations: a GeoJSON export read into polygons by class, and polygons filled into binary
//! masks at an image's resolution.
//!
//! QuPath exports a `FeatureCollection` (or a bare array of `Feature`s, or one `Feature`) whose
//! features carry a `Polygon` or `MultiPolygon` (holes as inner rings), the class in
//! `properties.classification.name` and an optional `properties.name`. Parsing is the `geojson`
//! crate's; polygons are checked by `geo` ([`geo::Validation`]).
//!
//! The fill convention, since every rasteriser picks one: coordinates are QuPath's pixel coordinates (x
//! to the right, y down, `(0, 0)` the top-left corner of the top-left pixel). Pixel `(col, row)` is
//! inside a polygon when its centre `(col + 0.5, row + 0.5)` is, by the even-odd rule over all of the
//! polygon's rings, so holes are cut wherever they lie. A centre exactly on an edge counts as inside
//! when the edge is the shape's left or top side, outside when it is the right or bottom side (half-open
//! spans, as in most scan-line fillers), so two polygons sharing an edge never both take a pixel.
//! A class's mask is the union of its polygons. `geo-rasterize` was not used: it fills every pixel a
//! shape touches (GDAL's `ALL_TOUCHED`), not by centres, and pins `geo` 0.18 beside the current one.
//!
//! What is refused (a per-item error naming the file and the feature): text that is not GeoJSON, a
//! polygon whose ring crosses itself, has fewer than 3 distinct points or a non-finite coordinate, and a
//! polygon entirely outside the image. What is counted and left out (never a silently empty mask):
//! point and line annotations, empty geometries, features without a class; a polygon partly outside the
//! image is clipped to it and counted.

pub use geo::Polygon;

use geo::{BoundingRect, Validation};

use crate::error::Result;
use crate::item_err;

/// One classified area annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// `properties.classification.name`.
    pub class: String,
    /// `properties.name`, or `feature N` (1-based) when it has none: for messages.
    pub label: String,
    /// Its polygons (one for a `Polygon`, several for a `MultiPolygon`).
    pub polygons: Vec<Polygon<f64>>,
}

/// A parsed annotation file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    /// Area annotations with a class.
    pub shapes: Vec<Shape>,
    /// What was left out, one line each (`feature 3 ("cells"): a Point, not an area`).
    pub ignored: Vec<String>,
}

/// Parses a QuPath GeoJSON export; `what` names the file in messages.
pub fn parse(text: &str, what: &str) -> Result<Annotations> {
    let features: Vec<geojson::Feature> = if text.trim_start().starts_with('[') {
        serde_json::from_str(text).map_err(|e| item_err!("{what}: not a GeoJSON array of features: {e}"))?
    } else {
        match text.parse::<geojson::GeoJson>().map_err(|e| item_err!("{what}: not GeoJSON: {e}"))? {
            geojson::GeoJson::FeatureCollection(fc) => fc.features,
            geojson::GeoJson::Feature(f) => vec![f],
            geojson::GeoJson::Geometry(_) => return Err(item_err!("{what}: a bare GeoJSON geometry has no class; QuPath exports features (Export objects as GeoJSON)")),
        }
    };
    let mut out = Annotations::default();
    for (i, f) in features.iter().enumerate() {
        let props = f.properties.as_ref();
        let name = props.and_then(|p| p.get("name")).and_then(|v| v.as_str());
        let label = match name {
            Some(n) => format!("feature {} (\"{n}\")", i + 1),
            None => format!("feature {}", i + 1),
        };
        let mut polygons = Vec::new();
        let mut other = Vec::new();
        if let Some(g) = &f.geometry {
            collect(&g.value, &mut polygons, &mut other);
        }
        if !other.is_empty() {
            out.ignored.push(format!("{label}: a {}, not an area", other.join(" and ")));
        }
        polygons.retain(|p: &Polygon<f64>| !p.exterior().0.is_empty());
        if polygons.is_empty() {
            if other.is_empty() {
                out.ignored.push(format!("{label}: empty geometry"));
            }
            continue;
        }
        for (k, p) in polygons.iter().enumerate() {
            if let Err(e) = check(p) {
                let part = if polygons.len() > 1 { format!(", polygon {}", k + 1) } else { String::new() };
                return Err(item_err!("{what}: {label}{part}: {e}"));
            }
        }
        let class = props.and_then(|p| p.get("classification")).and_then(|c| c.get("name")).and_then(|n| n.as_str());
        let Some(class) = class.filter(|c| !c.is_empty()) else {
            out.ignored.push(format!("{label}: no classification"));
            continue;
        };
        out.shapes.push(Shape { class: class.to_string(), label, polygons });
    }
    Ok(out)
}

/// Gathers the polygons of a geometry (and of a collection's members); names the rest.
fn collect(g: &geojson::GeometryValue, polygons: &mut Vec<Polygon<f64>>, other: &mut Vec<&'static str>) {
    use geojson::GeometryValue as V;
    let ring = |r: &Vec<geojson::Position>| geo::LineString::from(r.iter().map(|p| (p.as_slice().first().copied().unwrap_or(f64::NAN), p.as_slice().get(1).copied().unwrap_or(f64::NAN))).collect::<Vec<_>>());
    let polygon = |rings: &Vec<Vec<geojson::Position>>| -> Option<Polygon<f64>> {
        let (ext, holes) = rings.split_first()?;
        Some(Polygon::new(ring(ext), holes.iter().map(ring).collect()))
    };
    match g {
        V::Polygon { coordinates } => polygons.extend(polygon(coordinates)),
        V::MultiPolygon { coordinates } => polygons.extend(coordinates.iter().filter_map(polygon)),
        V::GeometryCollection { geometries } => geometries.iter().for_each(|m| collect(&m.value, polygons, other)),
        V::Point { .. } | V::MultiPoint { .. } => other.push("point"),
        V::LineString { .. } | V::MultiLineString { .. } => other.push("line"),
    }
}

/// Refuses what cannot be filled meaningfully: a ring crossing itself, too few points, a non-finite
/// coordinate. (Rings touching or overlapping one another are filled by the even-odd rule as drawn.)
fn check(p: &Polygon<f64>) -> std::result::Result<(), String> {
    use geo::algorithm::validation::InvalidPolygon as I;
    let mut first = None;
    let _ = p.visit_validation(Box::new(|e| {
        if matches!(e, I::SelfIntersection(_) | I::TooFewPointsInRing(_) | I::NonFiniteCoord(..)) && first.is_none() {
            first = Some(e.to_string());
        }
        Ok::<(), ()>(())
    }));
    first.map_or(Ok(()), Err)
}

/// How a polygon lies against a `width` x `height` image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Every vertex inside the image.
    Inside,
    /// Partly outside: filled where it overlaps the image.
    Clipped,
    /// No overlap with the image.
    Outside,
}

/// Where `p` lies against the image (by its bounding box).
pub fn placement(p: &Polygon<f64>, width: usize, height: usize) -> Placement {
    let Some(b) = p.bounding_rect() else { return Placement::Outside };
    let (w, h) = (width as f64, height as f64);
    if b.max().x <= 0.0 || b.max().y <= 0.0 || b.min().x >= w || b.min().y >= h {
        Placement::Outside
    } else if b.min().x < 0.0 || b.min().y < 0.0 || b.max().x > w || b.max().y > h {
        Placement::Clipped
    } else {
        Placement::Inside
    }
}

/// Sets to 255 every pixel of `mask` (`width` x `height`, row-major) whose centre lies inside `p` by the
/// even-odd rule over all its rings; other pixels are left as they are (so calling it for each polygon
/// of a class makes their union).
pub fn fill(mask: &mut [u8], width: usize, height: usize, p: &Polygon<f64>) {
    debug_assert_eq!(mask.len(), width * height);
    let edges: Vec<(f64, f64, f64, f64)> =
        std::iter::once(p.exterior()).chain(p.interiors()).flat_map(|r| r.lines().map(|l| (l.start.x, l.start.y, l.end.x, l.end.y))).filter(|e| e.1 != e.3).collect();
    let Some(b) = p.bounding_rect() else { return };
    // rows whose centre can be inside: centre y = row + 0.5 in [min y, max y)
    let first = (b.min().y - 0.5).ceil().max(0.0) as usize;
    let last = ((b.max().y - 0.5).ceil().min(height as f64)).max(0.0) as usize;
    let mut xs: Vec<f64> = Vec::new();
    for row in first..last {
        let cy = row as f64 + 0.5;
        xs.clear();
        for &(x0, y0, x1, y1) in &edges {
            // half-open in y: an edge counts where it spans [min y, max y)
            if (y0 <= cy) != (y1 <= cy) {
                xs.push(x0 + (cy - y0) * (x1 - x0) / (y1 - y0));
            }
        }
        xs.sort_by(f64::total_cmp);
        let line = &mut mask[row * width..(row + 1) * width];
        for pair in xs.chunks_exact(2) {
            // centres col + 0.5 in [a, b)
            let a = (pair[0] - 0.5).ceil().max(0.0);
            let b = (pair[1] - 0.5).ceil().min(width as f64);
            if a < b {
                line[a as usize..b as usize].fill(255);
            }
        }
    }
}

/// The outlines of a binary mask (`width` x `height`, non-zero = inside) as polygons with holes, traced
/// by marching squares between pixel centres: every ring passes between a pixel inside and one outside,
/// never through a centre, so [`fill`] gives the mask back exactly.
pub fn trace(mask: &[u8], width: usize, height: usize) -> Vec<Polygon<f64>> {
    let values: Vec<f64> = mask.iter().map(|&v| if v > 0 { 1.0 } else { 0.0 }).collect();
    // the builder (a port of d3-contour) puts value (col, row) at (col + 0.5, row + 0.5): pixel centres
    let builder = contour::ContourBuilder::new(width, height, false);
    match builder.contours(&values, &[0.5]) {
        Ok(c) => c.into_iter().flat_map(|c| c.into_inner().0 .0).collect(),
        Err(_) => Vec::new(),
    }
}

/// A QuPath-style GeoJSON `FeatureCollection`: one annotation per `(class, polygons)`, as QuPath's
/// "Export objects as GeoJSON" writes them (`objectType`, `classification.name`, a `MultiPolygon`).
pub fn feature_collection(shapes: &[(String, Vec<Polygon<f64>>)]) -> String {
    let features = shapes
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(class, polygons)| {
            let geometry = geojson::Geometry::from(&geo::MultiPolygon(polygons.clone()));
            let mut props = serde_json::Map::new();
            props.insert("objectType".into(), "annotation".into());
            props.insert("classification".into(), serde_json::json!({ "name": class }));
            geojson::Feature { geometry: Some(geometry), properties: Some(props), ..Default::default() }
        })
        .collect();
    geojson::GeoJson::FeatureCollection(geojson::FeatureCollection { features, bbox: None, foreign_members: None }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x0: f64, y0: f64, x1: f64, y1: f64) -> Vec<(f64, f64)> {
        vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    }

    fn poly(ext: Vec<(f64, f64)>, holes: Vec<Vec<(f64, f64)>>) -> Polygon<f64> {
        Polygon::new(ext.into(), holes.into_iter().map(Into::into).collect())
    }

    fn render(mask: &[u8], width: usize) -> Vec<String> {
        mask.chunks(width).map(|r| r.iter().map(|&v| if v > 0 { '#' } else { '.' }).collect()).collect()
    }

    #[test]
    fn a_square_with_a_hole_fills_by_pixel_centres() {
        let (w, h) = (6, 6);
        let mut m = vec![0u8; w * h];
        fill(&mut m, w, h, &poly(square(1.0, 1.0, 5.0, 5.0), vec![square(2.0, 2.0, 4.0, 4.0)]));
        assert_eq!(render(&m, w), ["......", ".####.", ".#..#.", ".#..#.", ".####.", "......"]);
    }

    #[test]
    fn edges_through_centres_take_the_left_and_top_side_only() {
        // a square whose edges run through pixel centres 1.5 and 3.5: columns 1..3 and rows 1..3
        let (w, h) = (5, 5);
        let mut m = vec![0u8; w * h];
        fill(&mut m, w, h, &poly(square(1.5, 1.5, 3.5, 3.5), vec![]));
        assert_eq!(render(&m, w), [".....", ".##..", ".##..", ".....", "....."]);
        // its neighbour sharing the edge x = 3.5 takes the column the first left out, and no other
        let mut n = vec![0u8; w * h];
        fill(&mut n, w, h, &poly(square(3.5, 1.5, 5.5, 3.5), vec![]));
        assert_eq!(render(&n, w), [".....", "...##", "...##", ".....", "....."]);
    }

    #[test]
    fn a_triangle_partly_outside_is_clipped_and_placed() {
        let (w, h) = (4, 4);
        let t = poly(vec![(-2.0, 0.0), (4.0, 0.0), (-2.0, 6.0), (-2.0, 0.0)], vec![]);
        assert_eq!(placement(&t, w, h), Placement::Clipped);
        let mut m = vec![0u8; w * h];
        fill(&mut m, w, h, &t);
        // inside where x + y < 4 (centres): row 0: x+0.5 < 3.5 -> cols 0..3
        assert_eq!(render(&m, w), ["###.", "##..", "#...", "...."]);
        assert_eq!(placement(&poly(square(5.0, 5.0, 6.0, 6.0), vec![]), w, h), Placement::Outside);
        assert_eq!(placement(&poly(square(0.0, 0.0, 4.0, 4.0), vec![]), w, h), Placement::Inside);
    }

    #[test]
    fn traced_masks_fill_back_exactly_and_round_trip_through_geojson() {
        let (w, h) = (9, 7);
        // a ring with a hole, a lone pixel, two pixels touching only at a corner, a run along the border
        let rows = ["#####....", "#...#..#.", "#.#.#....", "#...#.#..", "#####..#.", ".........", "######..."];
        let mask: Vec<u8> = rows.iter().flat_map(|r| r.bytes().map(|b| if b == b'#' { 255 } else { 0 })).collect();
        let polys = trace(&mask, w, h);
        let mut back = vec![0u8; w * h];
        for p in &polys {
            fill(&mut back, w, h, p);
        }
        assert_eq!(render(&back, w), rows);
        let text = feature_collection(&[("mass".into(), polys.clone()), ("empty".into(), vec![])]);
        let a = parse(&text, "t").unwrap();
        assert_eq!(a.shapes.len(), 1);
        assert_eq!((a.shapes[0].class.as_str(), a.shapes[0].polygons.len()), ("mass", polys.len()));
        assert!(a.ignored.is_empty());
    }

    #[test]
    fn parses_collections_arrays_and_single_features_counting_what_it_leaves_out() {
        let fc = r#"{"type":"FeatureCollection","features":[
          {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[4,0],[4,4],[0,4],[0,0]]]},
           "properties":{"objectType":"annotation","name":"left","classification":{"name":"adipose","color":[1,2,3]}}},
          {"type":"Feature","geometry":{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]],[[[2,2],[3,2],[3,3],[2,2]]]]},
           "properties":{"classification":{"name":"pectoral"}}},
          {"type":"Feature","geometry":{"type":"Point","coordinates":[1,1]},"properties":{"classification":{"name":"adipose"}}},
          {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0,0],[2,2]]},"properties":{"name":"ruler"}},
          {"type":"Feature","geometry":{"type":"Polygon","coordinates":[]},"properties":{"classification":{"name":"adipose"}}},
          {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[4,0],[4,4],[0,0]]]},"properties":{"name":"unnamed class"}}
        ]}"#;
        let a = parse(fc, "a.geojson").unwrap();
        assert_eq!(a.shapes.iter().map(|s| (s.class.as_str(), s.label.as_str(), s.polygons.len())).collect::<Vec<_>>(), [("adipose", "feature 1 (\"left\")", 1), ("pectoral", "feature 2", 2)]);
        assert_eq!(a.ignored, ["feature 3: a point, not an area", "feature 4 (\"ruler\"): a line, not an area", "feature 5: empty geometry", "feature 6 (\"unnamed class\"): no classification"]);
        let arr = r#"[{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[4,0],[4,4],[0,0]]]},"properties":{"classification":{"name":"x"}}}]"#;
        assert_eq!(parse(arr, "b").unwrap().shapes.len(), 1);
        let one = r#"{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[4,0],[4,4],[0,0]]]},"properties":{"classification":{"name":"x"}}}"#;
        assert_eq!(parse(one, "c").unwrap().shapes[0].class, "x");
    }

    #[test]
    fn refuses_what_is_not_geojson_and_polygons_that_cross_themselves() {
        let e = parse("hello", "n.geojson").unwrap_err().to_string();
        assert!(e.contains("n.geojson") && e.contains("not GeoJSON"), "{e}");
        let e = parse(r#"{"type":"Point","coordinates":[1,1]}"#, "g.geojson").unwrap_err().to_string();
        assert!(e.contains("g.geojson") && e.contains("no class"), "{e}");
        let bowtie = r#"{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[4,4],[4,0],[0,4],[0,0]]]},"properties":{"name":"bow","classification":{"name":"x"}}}"#;
        let e = parse(bowtie, "t.geojson").unwrap_err().to_string();
        assert!(e.contains("t.geojson") && e.contains("feature 1 (\"bow\")") && e.contains("self-intersection"), "{e}");
    }
}
