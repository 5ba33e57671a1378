"""Run the runtime CLI over the test catalog (a stand-in for a generated package's __main__).

python tests/runtime/launcher.py serve --transport stdio --db var/x.db
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from generator.runtime.cli import main  # noqa: E402
from tests.runtime.support import build_gateway  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(build_gateway(), sys.argv[1:]))
