#!/usr/bin/env python3
"""Compare critest's ginkgo JSON reports of two handlers (scripts/critest).

  critest-report.py OUTDIR runc,nested      markdown comparison on stdout (OUTDIR/HANDLER.json,
                                            OUTDIR/versions.txt)
  critest-report.py --write DOC NAME FILE   put FILE between `<!-- critest:begin NAME -->` and
                                            `<!-- critest:end NAME -->` in DOC (appended when
                                            the markers are missing); text outside is kept
"""
import json
import os
import re
import sys

FAILED = {"failed", "panicked", "timedout", "interrupted", "aborted"}


def load(path):
    """{spec name: (state, first line of the failure or skip message)} of the It nodes"""
    specs = {}
    if not os.path.exists(path):
        return None
    with open(path) as f:
        reports = json.load(f)
    for rep in reports:
        for s in rep.get("SpecReports") or []:
            if s.get("LeafNodeType") != "It":
                continue
            name = " ".join(t for t in s.get("ContainerHierarchyTexts") or [] if t)
            name = (name + " " + s.get("LeafNodeText", "")).strip()
            state = s.get("State", "?")
            fail = s.get("Failure") or {}
            msg = " ".join((fail.get("Message") or "").split())
            if len(msg) > 220:
                msg = msg[:217] + "..."
            if state in FAILED and fail.get("Location", {}).get("FileName"):
                loc = fail["Location"]
                msg += f" ({os.path.basename(loc['FileName'])}:{loc.get('LineNumber')})"
            specs[name] = (state, msg)
    return specs


def cell(text):
    text = re.sub(r"/(?:var|run|tmp)/[^\s\"']*/([^/\s\"']+)", r"<path>/\1", text)
    return text.replace("|", "\\|").replace("\n", " ")


def outcome(state):
    return "failed" if state in FAILED else state


def compare(outdir, handlers):
    runs = {h: load(f"{outdir}/{h}.json") for h in handlers}
    out = []
    vfile = f"{outdir}/versions.txt"
    if os.path.exists(vfile):
        with open(vfile) as f:
            out += ["Run: " + "; ".join(line.strip() for line in f if line.strip()) + ".", ""]
    out += ["| handler | specs | passed | failed | skipped |", "|---|---:|---:|---:|---:|"]
    for h, specs in runs.items():
        if specs is None:
            out.append(f"| {h} | no report | | | |")
            continue
        st = [outcome(s) for s, _ in specs.values()]
        out.append(f"| {h} | {len(st)} | {st.count('passed')} | {st.count('failed')} | {st.count('skipped')} |")
    if len(handlers) != 2 or any(runs[h] is None for h in handlers):
        return "\n".join(out) + "\n"
    (a, ra), (b, rb) = runs.items()
    names = sorted(set(ra) | set(rb))

    def state(r, n):
        return outcome(r.get(n, ("missing", ""))[0])

    def table(title, rows, cols):
        out.extend(["", f"### {title} ({len(rows)})", ""])
        if not rows:
            out.append("none")
            return
        out.append("| spec | " + " | ".join(cols) + " |")
        out.append("|---" * (len(cols) + 1) + "|")
        for r in rows:
            out.append("| " + " | ".join(cell(x) for x in r) + " |")

    table(f"Pass with {a}, fail with {b}",
          [(n, rb[n][1]) for n in names if state(ra, n) == "passed" and state(rb, n) == "failed"],
          [f"{b} failure"])
    table(f"Pass with {b}, fail with {a}",
          [(n, ra[n][1]) for n in names if state(rb, n) == "passed" and state(ra, n) == "failed"],
          [f"{a} failure"])
    table("Fail with both",
          [(n, ra[n][1], rb[n][1]) for n in names if state(ra, n) == "failed" and state(rb, n) == "failed"],
          [f"{a} failure", f"{b} failure"])
    other = [(n, state(ra, n), state(rb, n)) for n in names
             if {state(ra, n), state(rb, n)} - {"passed", "failed"} and state(ra, n) != state(rb, n)]
    if other:
        table("Skipped or missing in one run only", other, [a, b])
    skipped = [(n, ra[n][1] or rb.get(n, ("", ""))[1]) for n in names
               if state(ra, n) == "skipped" and state(rb, n) == "skipped"]
    table("Skipped with both (critest's reason)", skipped, ["reason"])
    return "\n".join(out) + "\n"


def write(doc, name, src):
    with open(src) as f:
        body = f.read().rstrip("\n")
    begin, end = f"<!-- critest:begin {name} -->", f"<!-- critest:end {name} -->"
    text = open(doc).read() if os.path.exists(doc) else ""
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        text = pre + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(doc + ".tmp", "w") as f:
        f.write(text)
    os.replace(doc + ".tmp", doc)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--write":
        write(*sys.argv[2:])
    elif len(sys.argv) == 3:
        sys.stdout.write(compare(sys.argv[1], sys.argv[2].split(",")))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
