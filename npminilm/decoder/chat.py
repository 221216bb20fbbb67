"""The chat template (ChatML) and chat files: how a conversation becomes token ids, and which of them are trained.

    <|im_start|>system\n{content}<|im_end|>\n        (optional)
    <|im_start|>user\n{content}<|im_end|>\n
    <|im_start|>assistant\n{content}<|im_end|>\n
    ...

`<|im_start|>` and `<|im_end|>` are special tokens (their own ids, which no text encodes to); the role names and
the newlines are ordinary text. Supervised fine-tuning trains on the assistant turns only: each assistant
message's content and its `<|im_end|>` (so the model learns where a reply stops), never the headers, the user's
or the system's words. A prompt for a reply ends with the generation prompt `<|im_start|>assistant\n`.

A chat file is JSON Lines, one conversation per line, as OpenAI's and TRL's chat datasets are:
    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
"""

from __future__ import annotations

from ..errors import DataError, NpMiniLMError
from ..io.jsonl import json_lines

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (IM_START, IM_END)
ROLES = ("system", "user", "assistant")


def chat_tokenizer(tokenizer):
    """The tokenizer with the template's special tokens (a copy with new ids if it lacks them)."""
    return tokenizer.with_special(SPECIAL_TOKENS)


def render(messages, tokenizer, add_generation_prompt=False):
    """-> (ids, trained): the conversation's token ids, and for each whether it is an assistant token (content
    or closing <|im_end|>) that supervised fine-tuning learns to predict. add_generation_prompt appends
    `<|im_start|>assistant\\n` (untrained), the prompt a reply is sampled after."""
    start, end = tokenizer.special_id(IM_START), tokenizer.special_id(IM_END)
    newline = tokenizer.encode("\n")
    ids, trained = [], []
    for m in messages:
        head = [start] + tokenizer.encode(m["role"] + "\n")
        body = tokenizer.encode(m["content"]) + [end]
        ids += head + body + newline
        trained += [False] * len(head) + [m["role"] == "assistant"] * len(body) + [False] * len(newline)
    if add_generation_prompt:
        prompt = [start] + tokenizer.encode("assistant\n")
        ids += prompt
        trained += [False] * len(prompt)
    return ids, trained


def check_messages(record):
    """The messages of one chat record, or DataError saying what is wrong with it."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise DataError('expected an object with a "messages" list')
    messages = record["messages"]
    if not messages:
        raise DataError('"messages" is empty')
    for k, m in enumerate(messages, 1):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            raise DataError(f'message {k} must be an object with "role" and "content" (and nothing else)')
        if m["role"] not in ROLES:
            raise DataError(f"message {k} has role {m['role']!r}; the roles are {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise DataError(f"message {k}'s content is {type(m['content']).__name__}, not a string")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError("no assistant message: nothing to learn from")
    return messages


def read_chats(path, tokenizer):
    """-> [(ids, trained)] for each conversation of the JSON Lines file (blank lines skipped). A bad record is a
    DataError naming its line: not JSON, not a chat, or characters the tokenizer cannot encode."""
    chats = []
    for n, record in json_lines(path):
        try:
            chats.append(render(check_messages(record), tokenizer))
        except NpMiniLMError as exc:  # DataError, or the tokenizer's UnknownCharacterError
            raise DataError(f"{path}:{n}: {exc}") from None
    if not chats:
        raise DataError(f"{path}: no conversations")
    return chats
