#!/usr/bin/env python3
"""Reads a DICOM SEG written by mammoflow with highdicom, independently of dicom-rs, and checks it.

usage: check-seg.py SEG SOURCE EXPECTED_JSON

EXPECTED_JSON: {"labels": [segment labels in order], "pixels": [foreground pixels per segment]}.
Prints one JSON line with what highdicom read; exits 1 (naming the difference) if anything differs.
"""
import json
import sys

import highdicom as hd
import numpy as np
import pydicom


def main():
    seg_path, source_path, expected = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    seg = hd.seg.segread(seg_path)
    source = pydicom.dcmread(source_path, stop_before_pixels=True)
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    refs = seg.get_source_image_uids()
    numbers = list(range(1, len(labels) + 1))
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[source.SOPInstanceUID], segment_numbers=numbers
    )
    counts = [int(np.count_nonzero(pixels[0, :, :, k])) for k in range(len(numbers))]
    got = {
        "highdicom": hd.__version__,
        "segmentation_type": seg.segmentation_type.value,
        "labels": labels,
        "pixels": counts,
        "shape": list(pixels.shape[1:3]),
        "study": seg.StudyInstanceUID,
        "references": [list(r) for r in refs],
        "patient_id": str(seg.get("PatientID", "")),
    }
    print(json.dumps(got))
    problems = []
    if got["labels"] != expected["labels"]:
        problems.append(f"labels {got['labels']} != {expected['labels']}")
    if got["pixels"] != expected["pixels"]:
        problems.append(f"pixels per segment {got['pixels']} != {expected['pixels']}")
    if got["shape"] != [source.Rows, source.Columns]:
        problems.append(f"shape {got['shape']} != {[source.Rows, source.Columns]}")
    if seg.StudyInstanceUID != source.StudyInstanceUID:
        problems.append("the SEG is not in the source's study")
    if [source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID] not in got["references"]:
        problems.append(f"the source image is not referenced: {got['references']}")
    if got["patient_id"]:
        problems.append("a patient id was copied")
    if problems:
        print("; ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
