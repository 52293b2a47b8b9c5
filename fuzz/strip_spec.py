#!/usr/bin/env python3
"""Make the stripped copy of the client-server OpenAPI definitions in fuzz/spec/.

The fuzz run needs the spec's client-server definitions, and a clone of this
repository has no spec checkout beside it. So the repository carries a copy of
just what the run reads: every file of data/api/client-server/ and every file
they reach by `$ref` (event schemas, shared definitions), with the same paths,
so fuzz/bundle_spec.py reads it like a full checkout. Prose is removed
(`description`, `summary` and the notes of `x-changedInMatrixVersion`); paths,
parameters, schemas, the other `x-*` keys and the `example`/`examples` the fuzz run
sends in its examples phase stay. Each file keeps its copyright header and says
that it was changed; the spec's LICENSE goes beside the copy, and
fuzz/spec/README.md names the spec version.

  fuzz/strip_spec.py --spec-dir CHECKOUT            # rewrite fuzz/spec
  fuzz/strip_spec.py --spec-dir CHECKOUT --check    # exit 1 if fuzz/spec differs

CHECKOUT is a matrix-spec checkout (--spec-dir defaults to $MATRIX_SPEC_DIR).

With --check, a checkout of another spec version than the copy's is only reported:
the copy is then older or newer, not wrong.

The spec version is read from the checkout (`git describe --tags` when it is a git
checkout of its own, or the "tag **vX.Y**" line of its README.md); --spec-version
overrides it. Needs PyYAML.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

# Mapping keys whose children are names chosen by the spec (property names,
# status codes, paths, ...), never keywords: nothing under them is stripped by name.
NAME_MAPS = {"properties", "patternProperties", "$defs", "definitions", "paths", "responses",
             "headers", "variables", "securitySchemes", "schemas", "content", "mapping"}
# Keys whose values are data, copied as they are.
DATA_KEYS = {"example", "examples", "default", "enum", "const"}
# Prose.
STRIPPED_KEYS = {"description", "summary", "x-changedInMatrixVersion"}

HERE = os.path.dirname(os.path.abspath(__file__))


def strip(node, parent_key=None):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if parent_key in NAME_MAPS:
                out[key] = strip(value, None)
                if parent_key == "responses" and isinstance(value, dict) and "description" in value:
                    out[key] = {"description": "", **out[key]}  # required in a response object
            elif key in DATA_KEYS:
                out[key] = value
            elif key in STRIPPED_KEYS and isinstance(value, (str, dict)):
                continue
            else:
                out[key] = strip(value, key)
        return out
    if isinstance(node, list):
        return [strip(item, parent_key if parent_key in ("allOf", "anyOf", "oneOf") else None) for item in node]
    return node


def refs(node, in_data=False):
    """Every `$ref` string in a parsed document, with whether it sits in an example (data)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value, in_data
            else:
                yield from refs(value, in_data or key in DATA_KEYS)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item, in_data)


def reachable_files(spec_dir):
    """data/api/client-server/*.yaml and every file they reach by $ref: {path relative to
    spec_dir: (text, is_data)}, where a data file (an example) is reached only from examples."""
    start = sorted(glob.glob(os.path.join(spec_dir, "data", "api", "client-server", "*.yaml")))
    if not start:
        sys.exit(f"strip_spec.py: no data/api/client-server/*.yaml under {spec_dir}")
    found = {}  # path -> (text, is_data)
    todo = [(os.path.normpath(p), False) for p in start]
    while todo:
        path, is_data = todo.pop()
        if path in found and (is_data or not found[path][1]):
            continue
        if path in found:
            text = found[path][0]
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        found[path] = (text, is_data)
        for ref, in_data in refs(yaml.safe_load(text)):
            file_part = ref.partition("#")[0]
            if file_part:
                todo.append((os.path.normpath(os.path.join(os.path.dirname(path), file_part)), is_data or in_data))
    root = os.path.normpath(spec_dir)
    return {os.path.relpath(p, root): found[p] for p in sorted(found)}


def header(text):
    """The leading comment block of a file (its copyright and licence lines)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("#") or (lines and not line.strip()):
            lines.append(line)
        else:
            break
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def spec_version(spec_dir):
    def git(*args):
        return subprocess.run(["git", "-C", spec_dir, *args], capture_output=True, text=True, check=True).stdout.strip()
    try:
        # Only the checkout's own tags: a folder inside another repository is not one.
        if os.path.samefile(git("rev-parse", "--show-toplevel"), spec_dir) and git("describe", "--tags"):
            return git("describe", "--tags")
    except (OSError, subprocess.CalledProcessError):
        pass
    readme = os.path.join(spec_dir, "README.md")
    if os.path.exists(readme):
        with open(readme, encoding="utf-8") as fh:
            m = re.search(r"tag \*\*(v[0-9][^*]*)\*\*", fh.read())
        if m:
            return m.group(1)
    return None


def read_copy_version(out_dir):
    try:
        with open(os.path.join(out_dir, "README.md"), encoding="utf-8") as fh:
            m = re.search(r"From the Matrix specification (\S+) ", fh.read())
    except OSError:
        return None
    return m.group(1) if m else None


def write_copy(spec_dir, out_dir, version):
    files = reachable_files(spec_dir)
    for rel, (text, is_data) in files.items():
        dest = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if is_data:
            shutil.copyfile(os.path.join(spec_dir, rel), dest)  # an example, as the spec has it
            continue
        doc = strip(yaml.safe_load(text))
        lines = header(text)
        lines.append("#")
        lines.append(f"# Changed from Matrix spec {version}: prose (description, summary, x-changedInMatrixVersion) removed by fuzz/strip_spec.py.")
        body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)
        with open(dest, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n" + body)
    shutil.copyfile(os.path.join(spec_dir, "LICENSE"), os.path.join(out_dir, "LICENSE"))
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as fh:
        n_api = sum(1 for rel in files if rel.startswith("data/api/client-server/"))
        fh.write(f"""# Matrix client-server API definitions, stripped

From the Matrix specification {version} (<https://github.com/matrix-org/matrix-spec>),
licensed under the Apache License 2.0 (`LICENSE` here; each file keeps its copyright
notice). The fuzz run (`fuzz/run.sh`) reads this copy when no spec checkout is given.

It holds the {n_api} files of `data/api/client-server/` and the {len(files) - n_api} files they
reach by `$ref`, at the spec's own paths. In the definitions, `description`, `summary` and
`x-changedInMatrixVersion` are removed; paths, parameters, schemas and examples are as the
spec has them, and the example files are copied unchanged.

Made by `fuzz/strip_spec.py --spec-dir <spec checkout>`; do not edit by hand.
""")

    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec-dir", default=os.environ.get("MATRIX_SPEC_DIR"),
                    help="a matrix-spec checkout (default: $MATRIX_SPEC_DIR)")
    ap.add_argument("-o", "--out", default=os.path.join(HERE, "spec"), help="where the copy goes (default fuzz/spec)")
    ap.add_argument("--spec-version", help="the spec version the checkout is (default: read from it)")
    ap.add_argument("--check", action="store_true", help="compare with the copy in --out instead of writing it")
    args = ap.parse_args()
    if not args.spec_dir:
        ap.error("give a matrix-spec checkout with --spec-dir or $MATRIX_SPEC_DIR")

    version = args.spec_version or spec_version(args.spec_dir)
    if not version:
        sys.exit("strip_spec.py: cannot tell the spec version of the checkout; give --spec-version")
    if not args.check:
        if os.path.isdir(args.out):
            shutil.rmtree(args.out)
        files = write_copy(args.spec_dir, args.out, version)
        print(f"strip_spec.py: wrote {len(files)} files of spec {version} to {args.out}")
        return
    copy_version = read_copy_version(args.out)
    if copy_version != version:
        print(f"strip_spec.py: {args.out} is spec {copy_version}, {args.spec_dir} is {version}; "
              f"to fuzz against {version}, run fuzz/strip_spec.py --spec-dir {args.spec_dir}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        write_copy(args.spec_dir, tmp, version)
        diff = subprocess.run(["diff", "-r", "-q", tmp, args.out], capture_output=True, text=True)
        if diff.returncode != 0:
            print(diff.stdout.replace(tmp, "<fresh copy>"), end="")
            sys.exit(f"strip_spec.py: {args.out} is not what {args.spec_dir} gives; run fuzz/strip_spec.py --spec-dir {args.spec_dir}")
        print(f"strip_spec.py: {args.out} matches spec {version} at {args.spec_dir}")


if __name__ == "__main__":
    main()
