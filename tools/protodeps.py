"""Copies the google/api and google/rpc protos from googleapis-common-protos into a folder."""

import shutil
import sys
from pathlib import Path

import google.api
import google.rpc

# Only what the contracts import (and what Envoy needs to render google.rpc.Status details).
FILES = {
    google.api: ["annotations.proto", "http.proto", "field_behavior.proto"],
    google.rpc: ["status.proto", "error_details.proto", "code.proto"],
}


def main() -> None:
    """Copies the files into the folder named on the command line."""
    out = Path(sys.argv[1])
    for package, names in FILES.items():
        src = Path(next(iter(package.__path__)))
        dst = out / "google" / src.name
        dst.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(src / name, dst / name)


if __name__ == "__main__":
    main()
