//! An item's image and label map, read from its inputs and checked against each other: the pair every
//! stage after merging works on.

use crate::codec::read_labels;
use crate::error::Result;
use crate::item_err;
use crate::npy::Tensor2;

/// Reads an item's `image` tensor and `labels` map (the pair every stage after merging works on) and
/// checks that they have the same size.
pub fn read_image_and_labels(inputs: &super::ItemInputs) -> Result<(Tensor2<u16>, Tensor2<u8>)> {
    read_pair(inputs, "")
}

/// [`read_image_and_labels`] for the roles `{prefix}image` / `{prefix}labels` (`in3/` for the fourth
/// input of an item that reads many).
pub fn read_pair(inputs: &super::ItemInputs, prefix: &str) -> Result<(Tensor2<u16>, Tensor2<u8>)> {
    read_with(inputs, prefix, crate::npy::decode_u16, |t| (t.width, t.height))
}

/// [`read_pair`] for the networks: the image gray or RGB (`ingest-cityscapes`).
pub fn read_image_pair(inputs: &super::ItemInputs, prefix: &str) -> Result<(crate::npy::Image, Tensor2<u8>)> {
    read_with(inputs, prefix, crate::npy::decode_image, |i| (i.width, i.height))
}

/// The image decoded by `decode` and the label map, checked to have the same size.
fn read_with<T>(inputs: &super::ItemInputs, prefix: &str, decode: fn(&[u8]) -> Result<T>, size: fn(&T) -> (usize, usize)) -> Result<(T, Tensor2<u8>)> {
    let ip = inputs.file(&format!("{prefix}image"))?;
    let img = decode(&crate::fsio::read_file(ip)?).map_err(|e| item_err!("{}: {e}", ip.display()))?;
    let labels = read_labels(inputs.file(&format!("{prefix}labels"))?)?;
    let (w, h) = size(&img);
    if (labels.width, labels.height) != (w, h) {
        return Err(item_err!("label map {} x {} does not match the image {w} x {h}", labels.width, labels.height));
    }
    Ok((img, labels))
}
