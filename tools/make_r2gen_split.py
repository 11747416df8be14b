"""Regenerate src/cxrgen/resources/iu_xray_r2gen_split.json (study ids only, no report text)
from R2Gen's IU X-ray annotation:  python tools/make_r2gen_split.py ../shared/data/iu_xray/annotation_r2gen.json
"""
import json
import sys
from pathlib import Path

annotation = json.loads(Path(sys.argv[1]).read_text())
split = {name: [s["id"] for s in studies] for name, studies in annotation.items()}
out = Path(__file__).resolve().parents[1] / "src/cxrgen/resources/iu_xray_r2gen_split.json"
out.write_text(json.dumps(split, separators=(",", ":")))
print({k: len(v) for k, v in split.items()}, "->", out)
