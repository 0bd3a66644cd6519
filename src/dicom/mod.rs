//! DICOM: decoding any vendor's grayscale images to full-precision 16-bit tensors, the metadata
//! manifest without identifying data, and writing phantom mammograms as real DICOM files.

pub mod decode;
pub mod header;
pub mod jpegls;
pub mod meta;
pub mod pixels;
pub mod rle;
pub mod seg;
pub mod subject;
pub mod write;

pub use decode::{decode, decode_path, open_bytes, DecodeOptions, Decoded};
pub use header::VoiChoice;
