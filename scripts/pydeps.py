"""The Python modules the nnopt scripts need, and the one command that installs them.

    import os, sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from pydeps import require
    require("numpy", "torch")   # before importing them

When a module is missing, require() prints which, the command that installs it
and which Python to run, then exits with status 1; nothing is installed behind
the user's back. NumPy and PyTorch come from Debian (python3-numpy,
python3-torch, for /usr/bin/python3); `safetensors` (needed only by
scripts/make_st_fixtures.py and tests/py_safetensors.sh) comes from PyPI, into
a virtual environment that sees Debian's PyTorch.
"""

import importlib
import os
import sys

DEBIAN_PYTHON = "/usr/bin/python3"
# module -> how to get it
_DEBIAN = {"numpy": "python3-numpy", "torch": "python3-torch"}
APT_COMMAND = "scripts/deps.sh --torch"
VENV_COMMAND = ("/usr/bin/python3 -m venv --system-site-packages .venv && "
                ".venv/bin/pip install safetensors")


def missing(*modules):
    """The modules among `modules` that cannot be imported, with the reason."""
    out = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            out.append((name, str(e)))
    return out


def require(*modules, prog=None):
    """Import check for `modules`; on failure print how to install them and exit 1.

    prog names the caller in the message (default: the running script)."""
    lost = missing(*modules)
    if not lost:
        return
    if not prog:
        prog = os.path.basename(sys.argv[0])
        prog = "python" if prog in ("", "-c") else prog
    names = ", ".join(name for name, _ in lost)
    lines = [f"{prog}: needs the Python module(s) {names} ({lost[0][1]})."]
    debian = [_DEBIAN[name] for name, _ in lost if name in _DEBIAN]
    if debian:
        lines.append(f"Install {' and '.join(debian)} (Debian's PyTorch and NumPy) with:")
        lines.append(f"    {APT_COMMAND}")
        lines.append(f"(that runs: sudo apt-get install -y python3-torch python3-numpy), then run "
                     f"the script with {DEBIAN_PYTHON}.")
    if any(name == "safetensors" for name, _ in lost):
        lines.append("Install the safetensors package (PyPI) beside Debian's PyTorch with:")
        lines.append(f"    {VENV_COMMAND}")
        lines.append("and run the script with .venv/bin/python.")
    if debian and os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PYTHON):
        lines.append(f"(This is {sys.executable}; Debian's packages are for {DEBIAN_PYTHON}.)")
    print("\n".join(lines), file=sys.stderr)
    sys.exit(1)
