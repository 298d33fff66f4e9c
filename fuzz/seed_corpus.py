#!/usr/bin/env python3
"""Seeds fuzz/corpus/record_decode/ with the 36 record vectors of
keys/tests/vectors (PROTOCOL.md Appendix A.2): real records of both suites,
valid and broken at every verification step, so the fuzzer starts past the
envelope decoder. Run from anywhere; the corpus directory is git-ignored."""

import json
import pathlib

root = pathlib.Path(__file__).resolve().parent
out = root / "corpus" / "record_decode"
out.mkdir(parents=True, exist_ok=True)
n = 0
for f in sorted((root.parent / "keys" / "tests" / "vectors").glob("*.json")):
    record = json.loads(f.read_text())["record"]
    (out / f.stem).write_bytes(bytes.fromhex(record))
    n += 1
print(f"wrote {n} seeds to {out}")
