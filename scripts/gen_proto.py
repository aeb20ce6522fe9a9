"""Regenerates the Python protobuf/gRPC code from proto/ into libs/common/src.

Usage: python scripts/gen_proto.py [--check]

--check regenerates into a temporary directory and exits 1 when the committed code differs,
so CI fails when someone edits a .proto without regenerating.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "libs" / "common" / "src"
GENERATED_PACKAGE = OUT_DIR / "modelhub"


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    include = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Make every generated directory a regular package.
    for directory in [out_dir / "modelhub", *(out_dir / "modelhub").rglob("*")]:
        if directory.is_dir() and directory.name != "__pycache__":
            (directory / "__init__.py").touch()


def diff(a: Path, b: Path) -> list[str]:
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}

    left, right = files(a), files(b)
    changed = sorted(left ^ right)
    changed += sorted(f for f in left & right if not filecmp.cmp(a / f, b / f, shallow=False))
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is out of date")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            changed = diff(Path(tmp) / "modelhub", GENERATED_PACKAGE)
        if changed:
            print("generated protobuf code is out of date; run `make proto` and commit:", file=sys.stderr)
            for name in changed:
                print(f"  {name}", file=sys.stderr)
            return 1
        print("generated protobuf code is up to date")
        return 0
    shutil.rmtree(GENERATED_PACKAGE, ignore_errors=True)
    generate(OUT_DIR)
    print(f"generated into {GENERATED_PACKAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
