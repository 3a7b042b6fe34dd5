# A pure-Python wheel (a package and a console script), made byte for byte the same every time.
python3 - <<'PY'
import base64, hashlib, zipfile
files = {
    "greet/__init__.py": "def main():\n    import sys\n    print('hello,', sys.argv[1])\n",
    "greet-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: greet\nVersion: 1.0\n",
    "greet-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: conformance\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "greet-1.0.dist-info/entry_points.txt": "[console_scripts]\ngreet = greet:main\n",
}
record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},{len(text.encode())}\n"
                 for name, text in files.items()) + "greet-1.0.dist-info/RECORD,,\n"
files["greet-1.0.dist-info/RECORD"] = record
with zipfile.ZipFile("greet-1.0-py3-none-any.whl", "w") as wheel:
    for name, text in files.items():
        wheel.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), text)
PY
