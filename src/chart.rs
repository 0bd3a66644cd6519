//! The report's bar chart: pixel accuracy, mean IoU and mean per-class accuracy per model, drawn with
//! `image` alone. Labels use a built-in 5 x 7 bitmap font (upper case, digits and a few signs), so the
//! chart needs no font file on the machine.

use image::{Rgb, RgbImage};

use crate::export::FoldScore;

/// Rows of a 5 x 7 glyph, the high bit of each row's five the leftmost pixel; `None` for characters
/// the font lacks (drawn as a blank).
fn glyph(c: char) -> Option<[u8; 7]> {
    let g: [u8; 7] = match c.to_ascii_uppercase() {
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [30, 17, 17, 17, 17, 17, 30],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 17, 10, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        '/' => [0, 1, 2, 4, 8, 16, 0],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        ' ' => [0; 7],
        _ => return None,
    };
    Some(g)
}

/// Width in pixels of `text` at `scale` (6 columns per character, the last one blank).
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * 6 * scale
}

/// Draws `text` with its top-left corner at `(x, y)`; pixels outside the image are skipped.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, colour: Rgb<u8>) {
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c).unwrap_or([0; 7]);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (16 >> col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (i as u32 * 6 * scale + col * scale + dx) as i64;
                        let py = y + (row as u32 * scale + dy) as i64;
                        if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                            img.put_pixel(px as u32, py as u32, colour);
                        }
                    }
                }
            }
        }
    }
}

fn fill(img: &mut RgbImage, x0: u32, y0: u32, w: u32, h: u32, colour: Rgb<u8>) {
    for y in y0..(y0 + h).min(img.height()) {
        for x in x0..(x0 + w).min(img.width()) {
            img.put_pixel(x, y, colour);
        }
    }
}

/// The three metrics' colours, in the order pixel accuracy, mean IoU, mean class accuracy.
pub const COLOURS: [Rgb<u8>; 3] = [Rgb([0, 114, 178]), Rgb([230, 159, 0]), Rgb([0, 158, 115])];

/// A grouped bar chart of the three metrics (percent) of each score, one group per model, labelled
/// with its training stage, the value above each bar; `title` on top.
pub fn metrics_chart(scores: &[&FoldScore], title: &str) -> RgbImage {
    const PLOT_H: u32 = 240;
    const BAR: u32 = 22;
    let (left, top, bottom) = (44u32, 64u32, 40u32);
    let group = (3 * BAR + 24).max(scores.iter().map(|s| text_width(&s.train_stage, 1) + 8).max().unwrap_or(0));
    let width = (left + group * scores.len() as u32 + 16).max(text_width(title, 2) + 2 * left).max(460);
    let height = top + PLOT_H + bottom;
    let (white, black, grey) = (Rgb([255, 255, 255]), Rgb([0, 0, 0]), Rgb([225, 225, 225]));
    let mut img = RgbImage::from_pixel(width, height, white);
    draw_text(&mut img, left as i64, 8, title, 2, black);
    let legend = ["PIXEL ACCURACY", "MEAN IOU", "MEAN CLASS ACCURACY"];
    let mut lx = left;
    for (name, colour) in legend.iter().zip(COLOURS) {
        fill(&mut img, lx, 34, 10, 10, colour);
        draw_text(&mut img, lx as i64 + 14, 36, name, 1, black);
        lx += 14 + text_width(name, 1) + 16;
    }
    // Grid lines every 25 %, labelled.
    for pct in [0u32, 25, 50, 75, 100] {
        let y = top + PLOT_H - PLOT_H * pct / 100;
        fill(&mut img, left, y, width - left - 8, 1, if pct == 0 { black } else { grey });
        let label = format!("{pct}");
        draw_text(&mut img, (left - 6 - text_width(&label, 1)) as i64, y as i64 - 3, &label, 1, black);
    }
    for (i, s) in scores.iter().enumerate() {
        let gx = left + 8 + i as u32 * group;
        let values = [s.metrics.pixel_accuracy, s.metrics.mean_iou, s.metrics.mean_class_accuracy];
        for (k, v) in values.iter().enumerate() {
            let x = gx + k as u32 * BAR;
            let Some(v) = v else { continue };
            let h = ((v.clamp(0.0, 1.0) * PLOT_H as f64).round() as u32).max(1);
            fill(&mut img, x, top + PLOT_H - h, BAR - 3, h, COLOURS[k]);
            let label = format!("{:.0}", v * 100.0);
            let tx = x as i64 + (BAR as i64 - 3 - text_width(&label, 1) as i64) / 2;
            draw_text(&mut img, tx, (top + PLOT_H - h) as i64 - 10, &label, 1, black);
        }
        draw_text(&mut img, gx as i64, (top + PLOT_H + 8) as i64, &s.train_stage, 1, black);
        draw_text(&mut img, gx as i64, (top + PLOT_H + 20) as i64, &format!("{} IMAGES", s.images), 1, Rgb([90, 90, 90]));
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_character_has_a_glyph_and_text_lands_where_asked() {
        for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.%/_():".chars() {
            assert!(glyph(c).is_some_and(|g| g.iter().any(|&r| r != 0)), "{c}");
        }
        let mut img = RgbImage::from_pixel(20, 10, Rgb([255, 255, 255]));
        draw_text(&mut img, 1, 1, "I", 1, Rgb([0, 0, 0]));
        // `I`: a bar in the middle column from row 1 to 7, serifs on rows 1 and 7.
        assert_eq!(img.get_pixel(3, 4), &Rgb([0, 0, 0]));
        assert_eq!(img.get_pixel(1, 4), &Rgb([255, 255, 255]));
        assert_eq!(img.get_pixel(2, 1), &Rgb([0, 0, 0]));
        assert_eq!(text_width("ab", 2), 24);
    }

    #[test]
    fn bars_are_as_tall_as_their_values() {
        let mut c = crate::metrics::Confusion::new(2);
        c.add(&[0, 0, 1, 1], &[0, 0, 1, 0], None).unwrap();
        let metrics = c.metrics();
        let s = FoldScore {
            eval_stage: "e".into(),
            train_stage: "unet".into(),
            model: "unet".into(),
            fold: "test".into(),
            images: 1,
            metrics: metrics.clone(),
            confusion: c,
            train_key: String::new(),
            eval_keys: String::new(),
            class_names: vec!["a".into(), "b".into()],
        };
        let img = metrics_chart(&[&s], "TEST");
        // Column through the middle of the first bar (pixel accuracy 0.75): coloured from the axis up
        // to 75 % of the plot height.
        let x = 44 + 8 + 10;
        let coloured = (0..img.height()).filter(|&y| img.get_pixel(x, y) == &COLOURS[0]).count() as f64;
        assert!((coloured - 0.75 * 240.0).abs() <= 1.0, "{coloured}");
        assert_eq!(metrics.pixel_accuracy, Some(0.75));
    }
}
