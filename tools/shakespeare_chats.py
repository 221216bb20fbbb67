"""A tiny chat dataset from Tiny Shakespeare's dialogue, for `npminilm lm sft`: who speaks next -> the reply.

Each pair of consecutive speeches by two different speakers becomes one conversation:

    user:       "ROMEO: <the last line of Romeo's speech>\\nReply as JULIET."
    assistant:  "JULIET: <the first line of Juliet's answer>"

so a model fine-tuned on it answers in the template, as the speaker it was asked for. Pairs whose lines are longer
than --max-line characters are left out, which keeps a conversation within a small context (--max-line 48: at
most about 190 characters and special tokens).

    python tools/shakespeare_chats.py ../shared/data/tinyshakespeare/input.txt --out chats.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile

SPEAKER = re.compile(r"^([A-Z][A-Za-z' ]*[A-Za-z]):$")  # a line holding only "NAME:"


def speeches(text):
    """[(speaker, [lines])] in order: a speech is a "NAME:" line and the lines up to the next blank line."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.strip().split("\n")]
        match = SPEAKER.match(lines[0]) if lines else None
        if match and len(lines) > 1:
            out.append((match.group(1), [line for line in lines[1:] if line]))
    return out


def conversations(text, max_line=48):
    chats = []
    talk = speeches(text)
    for (a, a_lines), (b, b_lines) in zip(talk, talk[1:]):
        said, reply = a_lines[-1], b_lines[0]
        if a == b or len(said) > max_line or len(reply) > max_line:
            continue
        chats.append({"messages": [{"role": "user", "content": f"{a}: {said}\nReply as {b}."},
                                   {"role": "assistant", "content": f"{b}: {reply}"}]})
    return chats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="Tiny Shakespeare's input.txt")
    ap.add_argument("--out", required=True, help="JSON Lines output")
    ap.add_argument("--max-line", type=int, default=48, help="longest line kept, in characters (default 48)")
    a = ap.parse_args(argv)
    with open(a.data, encoding="utf-8") as f:
        chats = conversations(f.read(), a.max_line)
    folder = os.path.dirname(os.path.abspath(a.out))
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, delete=False, suffix=".part") as f:
        for chat in chats:
            f.write(json.dumps(chat, ensure_ascii=False) + "\n")
    os.replace(f.name, a.out)
    print(f"{len(chats):,} conversations -> {a.out}")


if __name__ == "__main__":
    main()
