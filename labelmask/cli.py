"""The ``labelmask`` command: look at masks, prove a template, survey a dataset.

Commands::

    labelmask show CONVERSATION TOKENIZER [--html FILE]   the tokens, coloured by role and trained / not
    labelmask check TOKENIZER [--template NAME_OR_FILE]    property checks of labelmask.testing, a verdict table
    labelmask check TOKENIZER --append-only                 is the stock template append-only (multi-turn RL)?
    labelmask stats DATASET TOKENIZER [--json]             trained share per role over a JSONL dataset
    labelmask templates                                    the registered annotated templates

``show`` and ``stats`` read rows in the dataset formats :func:`labelmask.mask_dataset` reads (OpenAI
``messages``, ShareGPT, Alpaca, TRL prompt/completion), detected from each object's keys or named with
``--format``, ``--column KEY=NAME`` and ``--tag KEY=VALUE``; a ``.json`` file holds one conversation or a
list of rows (LLaMA-Factory's files).

``TOKENIZER`` is a local folder holding a tokenizer or processor (what
``save_pretrained`` writes, or a model snapshot), or a Hub model id (``org/name``) read
from the local Hugging Face cache; nothing is downloaded. ``-`` reads the rows from stdin
(JSON lines, or one JSON document); JSON lines are read one line at a time.
``labelmask --version`` prints the version; ``stats --json`` prints one JSON object
(keys in docs/cli.md). labelmask's warnings print once each as ``note:`` lines on stderr.

Exit status: 0 on success; 1 when ``check`` finds an invariant that does not hold (or, with
``--append-only``, a conversation whose renders are not append-only), or
``stats --fail-on-refused`` saw a refused or skipped row; 2 for a bad argument or input
(a missing path, a malformed file, a conversation labelmask refuses), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from labelmask import __version__

__all__ = ["main"]

_JSONL = (".jsonl", ".ndjson")


class CliError(Exception):
    """A problem with the command's input: printed as ``labelmask <command>: error: ...``, exit status 2."""


# ---------------------------------------------------------------------------- inputs


def _tokenizer_folder(path: str) -> Path:
    """The folder ``path``, or, when no such path exists, the Hugging Face cache's snapshot of the Hub
    model id ``path`` (``org/name``), found offline: nothing is downloaded."""
    folder = Path(path)
    if folder.exists():
        if not folder.is_dir():
            raise CliError(f"{path}: not a folder; give the folder that holds tokenizer.json / tokenizer_config.json")
        return folder
    missing = f"{path}: no such file or directory (expected a tokenizer or processor folder"
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:  # transformers depends on huggingface_hub; without it, no Hub ids
        raise CliError(missing + ")") from None
    try:
        validate_repo_id(path)
    except HFValidationError:
        raise CliError(missing + ")") from None
    try:
        # local_files_only: the snapshot refs/main points to, read from the cache (HF_HUB_CACHE, HF_HOME).
        return Path(snapshot_download(path, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, or a cache folder it cannot read
        raise CliError(
            f"{missing}, or a Hub model id in the Hugging Face cache at {constants.HF_HUB_CACHE}); nothing is "
            "downloaded: "
            f"fetch it first with `hf download {path}`, or give the folder"
        ) from None


def _load_processor(path: str) -> Any:
    """The tokenizer (or processor) in the folder ``path`` or in the Hub cache's snapshot of the model id
    ``path``, loaded without network access."""
    folder = _tokenizer_folder(path)
    is_processor = (folder / "processor_config.json").exists() or (folder / "preprocessor_config.json").exists()
    try:
        if is_processor:  # imported only when needed: it pulls in torch and the image stack
            from transformers import AutoProcessor

            return AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError... for a folder it cannot read
        where = path if folder == Path(path) else f"{path} (cached at {folder})"
        reason = " ".join(str(e).split())  # transformers' messages run over several lines; errors are one line
        raise CliError(f"{where}: cannot load a tokenizer from this folder ({type(e).__name__}: {reason})") from e


class _BadLine(NamedTuple):
    """A line of a JSONL input that is not a JSON value (``reason`` says why)."""

    reason: str


_STDIN = "-"


def _name(path: str) -> str:
    return "<stdin>" if path == _STDIN else path


def _read_json_records(path: str) -> list[tuple[str, Any]]:
    """``(where, value)`` for each JSON value of the file, read whole (``show --tools``)."""
    return list(_records(path))


def _records(path: str) -> Iterator[tuple[str, Any]]:
    """``(where, value)`` for each JSON value of ``path`` (``-``: stdin), read lazily.

    A ``.json`` file holds one JSON document, a ``.jsonl`` / ``.ndjson`` file one value a line;
    any other path (stdin, a pipe) is JSON lines when its first non-blank line is a JSON value
    by itself, else one document. JSON lines are read one at a time, never the whole input; a
    line that is not UTF-8 JSON is yielded as a :class:`_BadLine`. The file is opened here, so
    a missing one raises at the call, not at the first row.
    """
    name = _name(path)
    if path == _STDIN:
        stream = sys.stdin.buffer
    else:
        file = Path(path)
        if not file.exists():
            raise CliError(f"{path}: no such file")
        if file.is_dir():
            raise CliError(f"{path}: not a file")
        try:
            stream = file.open("rb")
        except OSError as e:
            raise CliError(f"{path}: cannot read ({e.strerror})") from e
    suffix = Path(path).suffix.lower() if path != _STDIN else ""
    mode = "document" if suffix == ".json" else "lines" if suffix in _JSONL else "sniff"
    return _read(stream, name, mode)


def _read(stream: BinaryIO, name: str, mode: str) -> Iterator[tuple[str, Any]]:
    with contextlib.ExitStack() as stack:
        if stream is not sys.stdin.buffer:
            stack.callback(stream.close)
        if mode == "document":
            yield name, _document(stream.read(), name)
            return
        n_values = 0
        for n, raw in enumerate(stream, 1):  # split at b"\n" only: a JSON string may hold U+2028
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                n_values += 1
                yield f"{name}:{n}", _BadLine(f"not UTF-8 text ({e.reason} at byte {e.start})")
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                if mode == "sniff" and not n_values and line.lstrip()[:1] in ("[", "{"):
                    # The first line opens a JSON value it does not close: one document over many lines.
                    yield name, _document(raw + stream.read(), name, first_line=n)
                    return
                value = _BadLine(f"not valid JSON ({e.msg} at column {e.colno})")
            n_values += 1
            yield f"{name}:{n}", value
        if not n_values:
            raise CliError(f"{name}: no JSON lines" if mode == "lines" else f"{name}: empty input")


def _document(data: bytes, name: str, first_line: int = 1) -> Any:
    """The one JSON document ``data``; errors name the line and column (from ``first_line``)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CliError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(
            f"{name}:{e.lineno + first_line - 1}:{e.colno}: not valid JSON ({e.msg}); a .json file holds one "
            "conversation or a list of rows, a .jsonl file one per line"
        ) from e


def _row_format(value: Any, args: argparse.Namespace) -> Any:
    """The dataset format of the object ``value`` (``--format``, ``--column``, ``--tag``); raises LabelmaskError."""
    from labelmask._formats import resolve_format

    columns, tags = _pairs(args.column, "--column"), _pairs(args.tag, "--tag")
    return resolve_format(value.keys(), format=args.format, columns=columns, tags=tags, where="the object")


def _pairs(pairs: Sequence[str], option: str) -> dict[str, str] | None:
    out = {}
    for pair in pairs:
        key, sep, name = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{option} {pair!r}: use KEY=NAME")
        out[key] = name
    return out or None


def _dataset_rows(records: Iterator[tuple[str, Any]], args: argparse.Namespace) -> Iterator[tuple[str, Any]]:
    """The records, with an input of one value that is a list of dataset rows (LLaMA-Factory's ``.json``
    files) read as one record per row. Lazy: one record is read ahead, to know whether it is the only one."""
    first = next(records, None)
    if first is None:
        return
    second = next(records, None)
    if second is not None:
        yield first
        yield second
        yield from records
        return
    yield from _list_of_rows(*first, args)


def _list_of_rows(where: str, value: Any, args: argparse.Namespace) -> list[tuple[str, Any]]:
    from labelmask.errors import LabelmaskError

    if not isinstance(value, list) or not value or not all(isinstance(row, dict) for row in value):
        return [(where, value)]
    try:
        _row_format(value[0], args)
    except LabelmaskError:  # a list of messages, not of rows
        return [(where, value)]
    return [(f"{where}[{i}]", row) for i, row in enumerate(value)]


def _conversation(where: str, value: Any, args: argparse.Namespace) -> tuple[list, list | None]:
    """``(messages, tools)`` from a list of messages or an object in a dataset format (``messages`` and
    ``tools``, ShareGPT, Alpaca, prompt/completion); a row the format cannot read raises its LabelmaskError."""
    from labelmask.errors import LabelmaskError

    if isinstance(value, list):
        return value, None
    if not isinstance(value, dict):
        raise CliError(
            f"{where}: expected a list of messages or an object with a 'messages' list, got a {type(value).__name__}"
        )
    try:
        row_format = _row_format(value, args)
    except LabelmaskError as e:
        msg = f"{where}: expected a list of messages or an object with a 'messages' list, or a dataset row: {e}"
        raise CliError(msg) from e
    messages, tools = row_format.read(value)
    column = row_format.columns["tools"]
    if isinstance(tools, str):  # datasets often store tools as a JSON string
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as e:
            raise CliError(f"{where}: {column!r} is a string but not JSON ({e.msg})") from e
    if tools is not None and not isinstance(tools, list):
        raise CliError(f"{where}: {column!r} must be a list of tool schemas, not {type(tools).__name__}")
    return messages, tools


def _template_kwargs(pairs: Sequence[str], processor: Any = None) -> dict[str, Any]:
    kwargs = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CliError(f'--kwarg {pair!r}: use KEY=VALUE (VALUE is read as JSON if it parses: true, 3, "x")')
        if key in _SET_BY_THE_COMMAND:
            flag = _SET_BY_THE_COMMAND[key]
            raise CliError(f"--kwarg {key}=: the command sets {key} itself" + (f"; use {flag}" if flag else ""))
        try:
            kwargs[key] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key] = raw
    if kwargs:
        # Checked here, once: a bad option is the command's input error, not every row's.
        from labelmask._pipeline import KNOWN_OPTIONS, check_options, check_template_kwargs
        from labelmask.errors import LabelmaskError

        try:
            check_options(**kwargs)
            if processor is not None:
                check_template_kwargs(processor, {k: v for k, v in kwargs.items() if k not in KNOWN_OPTIONS})
        except LabelmaskError as e:
            raise CliError(f"--kwarg: {e}") from e
    return kwargs


# mask_conversation's arguments that the command passes itself, and the option that sets each (if any).
_SET_BY_THE_COMMAND = {
    "tools": "--tools",
    "template": "--template",
    "images": "--image",
    "policy": None,
    "verify": None,
    "return_tensors": None,
}


def _resolve_template(option: str | None, processor: Any) -> str | None:
    """The registered template name for ``--template``: a known name, or an annotated ``.jinja`` file to register."""
    if option is None:
        return None
    import labelmask
    from labelmask._registry import parse_annotated
    from labelmask.errors import AnnotationError, LabelmaskError

    file = Path(option)
    if not file.is_file():
        if option in labelmask.templates():  # a name ("llama3.1"), unless a file of that name exists
            return option
        known = ", ".join(sorted(labelmask.templates()))
        raise CliError(f"--template {option}: no such file, and no registered template of that name (known: {known})")
    source = file.read_text(encoding="utf-8")
    try:
        header = parse_annotated(source, where=option)
        name, content_format = header.name, header.content_format
    except AnnotationError:  # the metadata header is optional for a template registered at run time
        name, content_format = file.stem, "text"
    stock = getattr(processor, "chat_template", None)
    try:
        labelmask.register_template(
            name, source, matches=[stock] if isinstance(stock, str) else [], content_format=content_format
        )
    except LabelmaskError as e:
        raise CliError(f"--template {option}: {e}") from e
    return name


def _mask(messages: list, processor: Any, tools: list | None, args: argparse.Namespace, **kwargs: Any) -> Any:
    import labelmask

    policy = labelmask.Policy(on_empty="keep")  # a view or a count must see empty samples, not stop at them
    return labelmask.mask_conversation(
        messages, processor, tools=tools, policy=policy, return_tensors="np", template=args.template, **kwargs
    )


# ---------------------------------------------------------------------------- show


def _read_image(path: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as e:
        raise CliError(f"--image {path}: no such file") from e
    except (UnidentifiedImageError, OSError) as e:
        raise CliError(f"--image {path}: not an image Pillow can read ({e})") from e


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _show(args: argparse.Namespace) -> int:
    from labelmask import _view
    from labelmask._render import RenderBudget
    from labelmask.errors import LabelmaskError, RenderBudgetError

    if args.row < 0:
        raise CliError(f"--row {args.row}: rows count from 0")
    found, n_rows = None, 0
    for n_rows, (where, value) in enumerate(_dataset_rows(_records(args.conversation), args), 1):
        if isinstance(value, _BadLine):
            raise CliError(f"{where}: {value.reason}")
        if n_rows - 1 == args.row:
            found = where, value
            break  # the rest of the input is not read
    if found is None:
        name = _name(args.conversation)
        raise CliError(f"--row {args.row}: {name} has {n_rows} conversation(s) (rows 0..)")
    where, value = found
    try:
        messages, tools = _conversation(where, value, args)
    except LabelmaskError as e:
        raise CliError(f"{where}: {type(e).__name__}: {e}") from e
    if args.tools is not None:
        tools_where, tools = _read_json_records(args.tools)[0]
        if not isinstance(tools, list):
            raise CliError(f"{tools_where}: --tools must hold a JSON list of tool schemas")
    images = [_read_image(path) for path in args.image]
    processor = _load_processor(args.tokenizer)
    args.template = _resolve_template(args.template, processor)
    kwargs = _template_kwargs(args.kwarg, processor)
    if images:
        kwargs["images"] = images
    limit = args.max_tokens
    lift = "pass --max-tokens N for a larger view, or --max-tokens 0 for no limit"
    if limit:
        # The view holds about 1 KB per token: refused before tokenizing when the render is far longer
        # than any text of that many tokens (64 characters a token), and after it when over the limit.
        kwargs.setdefault("render_budget", RenderBudget(chars=64 * limit))
    try:
        out = _mask(messages, processor, tools, args, verify=True, **kwargs)
    except RenderBudgetError as e:
        if limit and e.limit == "chars":
            raise CliError(f"{where}: the conversation renders to more than {64 * limit:,} characters: {lift}") from e
        raise CliError(f"{where}: {type(e).__name__}: {e}") from e
    except LabelmaskError as e:
        raise CliError(f"{where}: {type(e).__name__}: {e}") from e
    if limit and out.report.n_tokens > limit:
        raise CliError(f"{where}: {out.report.n_tokens:,} tokens, over the view's limit of {limit:,}: {lift}")
    sys.stdout.write(_view.render_terminal(out, color=_use_color(args.color)))
    if args.html is not None:
        page = _view.render_html(out, title=f"labelmask show {Path(_name(args.conversation)).name}")
        try:
            Path(args.html).write_text(page, encoding="utf-8")
        except OSError as e:
            raise CliError(f"--html {args.html}: cannot write ({e.strerror})") from e
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- check


def _check_label(check: Any) -> str:
    return check.__name__.removeprefix("check_").replace("_", " ")


def _check(args: argparse.Namespace) -> int:
    if "hypothesis" not in sys.modules and not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        # Hypothesis keeps a cache in ./.hypothesis by default; keep the user's folder clean.
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labelmask" / "hypothesis"
        os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = str(cache)
    if args.append_only:
        return _append_only(args)
    try:
        from hypothesis import HealthCheck, Phase, find, given, seed, settings
        from hypothesis.errors import NoSuchExample
    except ImportError as e:
        raise CliError("check needs hypothesis: pip install 'labelmask[test]' (or pip install hypothesis)") from e
    from labelmask.errors import LabelmaskError, TemplateRaisedError
    from labelmask.testing import Expect, strategies
    from labelmask.testing._checks import CHECKS, Sample

    if args.examples < 1:
        raise CliError(f"--examples {args.examples}: use a positive number")
    processor = _load_processor(args.path)
    if getattr(processor, "chat_template", None) is None:
        raise CliError(f"{args.path}: the tokenizer has no chat_template to check against")
    name = _resolve_template(args.template, processor)
    expect = Expect(eot=... if args.eot is None else args.eot, template=name)
    kwargs = _template_kwargs(args.kwarg, processor)
    strategy = strategies.conversations(
        tools=args.tools,
        tool_role=args.tool_role,
        reasoning=args.reasoning,
        alternate=args.alternate,
        system=not args.no_system,
        max_turns=args.max_turns,
    )
    mask_row = "masks without error"
    rows = [mask_row] + [_check_label(c) for c in CHECKS]
    outcome = {row: {"passed": 0, "failed": 0, "first": None} for row in rows}
    rejected = {"n": 0, "first": None}
    matched: set[str] = set()

    def run_checks(messages: list, tools: list | None) -> dict[str, str | None]:
        """Failure message per row (None: held); empty when the template itself rejects the conversation."""
        try:
            sample = Sample.mask(processor, messages, tools, expect, template=name, **kwargs)
        except TemplateRaisedError as e:
            rejected["n"] += 1
            rejected["first"] = rejected["first"] or str(e)
            return {}
        except LabelmaskError as e:
            return {mask_row: f"{type(e).__name__}: {e}"}
        matched.add(sample.out.report.template)
        results: dict[str, str | None] = {mask_row: None}
        for check in CHECKS:
            try:
                check(sample)
                results[_check_label(check)] = None
            except Exception as e:  # an AssertionError, or the stock template failing on the way
                results[_check_label(check)] = f"{type(e).__name__}: {e}"
        return results

    quiet = settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    started = time.perf_counter()

    @seed(args.seed)
    @quiet
    @given(drawn=strategy)
    def survey(drawn: tuple) -> None:
        for row, failure in run_checks(*drawn).items():
            if failure is None:
                outcome[row]["passed"] += 1
            else:
                outcome[row]["failed"] += 1

    survey()
    # The smallest failing conversation of each failing row, found by Hypothesis' shrinker.
    for row in rows:
        if outcome[row]["failed"]:
            try:
                found = find(
                    strategy,
                    lambda drawn, row=row: run_checks(*drawn).get(row) is not None,
                    settings=settings(quiet, phases=[Phase.generate, Phase.shrink], max_examples=args.examples * 5),
                )
                outcome[row]["first"] = (found, run_checks(*found)[row])
            except NoSuchExample:
                outcome[row]["first"] = (None, "failed in the survey but not again (a flaky check)")
    elapsed = time.perf_counter() - started

    width = max(len(r) for r in rows)
    used = ", ".join(sorted(matched)) or "none"
    eot = repr(args.eot) if args.eot is not None else "taken from the annotation's eot spans (--eot is stronger)"
    print(f"labelmask check {args.path}: template {used}; end of turn {eot}")
    print(f"{args.examples} drawn conversations (seed {args.seed}), {elapsed:.1f} s")
    print()
    print(f"{'property':<{width}}  verdict  {'held':>5}  {'failed':>6}")
    for row in rows:
        o = outcome[row]
        verdict = "FAIL" if o["failed"] else ("ok" if o["passed"] else "n/a")
        print(f"{row:<{width}}  {verdict:<7}  {o['passed']:>5}  {o['failed']:>6}")
    if rejected["n"]:
        first = rejected["first"]
        print(f"\n{rejected['n']} conversations rejected by the template itself (not counted); first: {first}")
    failed = [row for row in rows if outcome[row]["failed"]]
    checked = outcome[mask_row]["passed"] + outcome[mask_row]["failed"]
    for row in failed:
        conversation, message = outcome[row]["first"]
        print(f"\n{row}: FAIL\n  {message}")
        if conversation is not None:
            messages, tools = conversation
            print(f"  smallest failing conversation: {json.dumps(messages, ensure_ascii=False)}")
            if tools is not None:
                print(f"  tools: {json.dumps(tools, ensure_ascii=False)}")
    if not checked:
        print("\nverdict: nothing checked (the template rejected every drawn conversation; see the options)")
        return 1
    print(f"\nverdict: {'FAIL' if failed else 'all properties hold'}")
    return 1 if failed else 0


def _append_only(args: argparse.Namespace) -> int:
    """``check --append-only``: is the stock template append-only (labelmask.testing.check_append_only)?"""
    try:
        from labelmask.testing import check_append_only, conversations
    except ImportError as e:
        raise CliError("check needs hypothesis: pip install 'labelmask[test]' (or pip install hypothesis)") from e
    from labelmask.errors import LabelmaskError

    if args.eot is not None:
        raise CliError("--eot checks the mask; --append-only checks the stock template alone: leave one out")
    if args.examples < 1:
        raise CliError(f"--examples {args.examples}: use a positive number")
    processor = _load_processor(args.path)
    if getattr(processor, "chat_template", None) is None:
        raise CliError(f"{args.path}: the tokenizer has no chat_template to check")
    name = _resolve_template(args.template, processor)
    kwargs = _template_kwargs(args.kwarg, processor if name is None else None)
    strategy = conversations(
        tools=True,
        tool_role=True,
        reasoning=True,
        alternate=args.alternate,
        system=not args.no_system,
        max_turns=args.max_turns,
    )
    started = time.perf_counter()
    try:
        result = check_append_only(processor, name, max_examples=args.examples, conversations=strategy, **kwargs)
    except LabelmaskError as e:
        raise CliError(f"{type(e).__name__}: {e}") from e
    elapsed = time.perf_counter() - started
    print(f"labelmask check {args.path} --append-only: {args.examples} drawn conversations, {elapsed:.1f} s")
    print(result)
    if result.skipped:
        print(f"first refusal: {result.skip_reason}")
    if result.append_only and not result.checked:
        print("verdict: nothing checked (the template refused every drawn conversation; see the options)")
        return 1
    return 0 if result.append_only else 1


# ---------------------------------------------------------------------------- stats


def _percentiles(lengths: Counter[int]) -> dict[str, int | None]:
    """p50, p90, p99 and max of the values counted in ``lengths`` (value -> rows), by the nearest-rank
    method: pN is the smallest value at least N% of the rows do not exceed. ``None`` with no rows."""
    n = sum(lengths.values())
    out: dict[str, int | None] = {"p50": None, "p90": None, "p99": None, "max": None}
    if not n:
        return out
    ranks = {name: -(-p * n // 100) for name, p in (("p50", 50), ("p90", 90), ("p99", 99))}  # ceil(p% of n)
    seen = 0
    for value, count in sorted(lengths.items()):
        seen += count
        for name, rank in ranks.items():
            if out[name] is None and seen >= rank:
                out[name] = value
    out["max"] = max(lengths)
    return out


def _count_lines(path: str) -> int | None:
    """The non-blank lines of a ``.jsonl`` / ``.ndjson`` file, for the progress bar's total (a pass over
    the file, in constant memory); ``None`` for stdin, a pipe or any other file (it may be a document)."""
    file = Path(path)
    if path == _STDIN or file.suffix.lower() not in _JSONL or not file.is_file():
        return None
    with file.open("rb") as lines:
        return sum(1 for line in lines if line.strip())


def _stats(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from labelmask import _view
    from labelmask.errors import LabelmaskError, TruncationError

    if args.max_length is not None and args.max_length < 1:
        raise CliError(f"--max-length {args.max_length}: use a positive number")
    rows = _dataset_rows(_records(args.dataset), args)
    first = next(rows, None)  # a malformed .json document fails here, before the tokenizer loads
    processor = _load_processor(args.tokenizer)
    args.template = _resolve_template(args.template, processor)
    kwargs = _template_kwargs(args.kwarg, processor)
    if args.max_length is not None:
        kwargs.update(max_length=args.max_length, truncation=args.truncation)
    per_role: dict[str, list[int]] = {name: [0, 0] for name in _view.ROLE_NAMES.values()}
    n_rows = n_truncated = n_empty = n_tokens = n_trained = n_cut = n_bad = 0
    first_bad: str | None = None
    tokens_per_row: Counter[int] = Counter()  # length -> rows: exact percentiles in memory bounded by max length
    trained_per_row: Counter[int] = Counter()
    templates: Counter[str] = Counter()
    errors: dict[str, list] = {}
    not_rendered: dict[str, list[int]] = {}  # field -> [messages, samples]
    disable = {"auto": None, "always": False, "never": True}[args.progress]
    records = itertools.chain([first] if first is not None else [], rows)
    total = (
        _count_lines(args.dataset) if args.progress == "always" or (disable is None and sys.stderr.isatty()) else None
    )
    # delay: a progress bar appears only on runs long enough to want one.
    bar = tqdm(records, desc="masking", unit="row", total=total, disable=disable, delay=args.progress_delay)
    for where, value in bar:
        try:
            if isinstance(value, _BadLine):
                raise CliError(f"{where}: {value.reason}")
            messages, tools = _conversation(where, value, args)
        except CliError as e:  # not a row at all: stops the run, or is counted with --skip-bad-lines
            if not args.skip_bad_lines:
                raise
            n_bad += 1
            first_bad = first_bad or str(e)
            continue
        except LabelmaskError as e:  # a row its format cannot read: refused
            n_rows += 1
            errors.setdefault(type(e).__name__, [0, f"{where}: {e}"])[0] += 1
            continue
        n_rows += 1
        try:
            out = _mask(messages, processor, tools, args, **kwargs)
        except LabelmaskError as e:
            if isinstance(e, TruncationError):
                n_truncated += 1
            errors.setdefault(type(e).__name__, [0, f"{where}: {e}"])[0] += 1
            continue
        report = out.report
        n_tokens += report.n_tokens
        n_trained += report.n_trained
        n_cut += report.n_cut
        n_truncated += report.n_cut > 0
        n_empty += report.n_trained == 0
        tokens_per_row[report.n_tokens] += 1
        trained_per_row[report.n_trained] += 1
        templates[report.template] += 1
        for field in {f for _, f in report.not_rendered}:
            counts = not_rendered.setdefault(field, [0, 0])
            counts[0] += sum(1 for _, f in report.not_rendered if f == field)
            counts[1] += 1
        for count in _view.role_counts(out):
            per_role[count.role][0] += count.tokens
            per_role[count.role][1] += count.trained
    if not n_rows:
        raise CliError(f"{_name(args.dataset)}: no rows: {n_bad} bad lines skipped (first: {first_bad})")
    n_refused = sum(n for n, _ in errors.values())
    n_masked = n_rows - n_refused
    status = 1 if args.fail_on_refused and (n_refused or n_bad) else 0
    if args.json:
        summary = {
            "labelmask_version": __version__,
            "dataset": _name(args.dataset),
            "tokenizer": args.tokenizer,
            "rows": n_rows,
            "masked": n_masked,
            "refused": n_refused,
            "refused_by_error": {name: {"rows": n, "first": first} for name, (n, first) in sorted(errors.items())},
            "bad_lines": n_bad,
            "first_bad_line": first_bad,
            "tokens": n_tokens,
            "trained": n_trained,
            "roles": {role: {"tokens": tokens, "trained": trained} for role, (tokens, trained) in per_role.items()},
            "tokens_per_row": _percentiles(tokens_per_row),
            "trained_per_row": _percentiles(trained_per_row),
            "truncated": n_truncated,
            "tokens_cut": n_cut,
            "max_length": args.max_length,
            "truncation": args.truncation if args.max_length is not None else None,
            "nothing_to_train": n_empty,
            "not_rendered": {
                field: {"messages": n_messages, "rows": n_samples}
                for field, (n_messages, n_samples) in sorted(not_rendered.items())
            },
            "templates": dict(sorted(templates.items())),
        }
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return status
    print(f"labelmask stats {_name(args.dataset)}: {n_rows} samples, {n_masked} masked, {n_tokens} tokens")
    print()
    width = max(len(r) for r in per_role)
    print(f"{'role':<{width}}  {'tokens':>8}  {'trained':>8}  {'trained %':>9}  {'% of trained':>12}")
    for role, (tokens, trained) in per_role.items():
        if not tokens:
            continue
        share = 100 * trained / tokens
        of_all = 100 * trained / n_trained if n_trained else 0.0
        print(f"{role:<{width}}  {tokens:>8}  {trained:>8}  {share:>8.1f}%  {of_all:>11.1f}%")
    total_share = 100 * n_trained / n_tokens if n_tokens else 0.0
    all_share = 100.0 if n_trained else 0.0
    print(f"{'total':<{width}}  {n_tokens:>8}  {n_trained:>8}  {total_share:>8.1f}%  {all_share:>11.1f}%")
    print()
    for what, lengths in (("tokens", tokens_per_row), ("trained tokens", trained_per_row)):
        if lengths:
            shown = ", ".join(f"{name} {value}" for name, value in _percentiles(lengths).items())
            print(f"{what} per sample: {shown}")
    limit = f" (max_length={args.max_length}, truncation={args.truncation})" if args.max_length else ""
    print(f"samples truncated: {n_truncated}{limit}, {n_cut} tokens cut")
    print(f"samples with nothing to train: {n_empty}")
    for field, (n_messages, n_samples) in sorted(not_rendered.items()):
        print(f"not rendered by the template, {field}: {n_messages} messages in {n_samples} samples")
    for name, (n, first_error) in sorted(errors.items()):
        print(f"samples refused, {name}: {n} (first: {first_error})")
    if n_bad:
        print(f"bad lines skipped: {n_bad} (first: {first_bad})")
    return status


# ---------------------------------------------------------------------------- templates


def _templates(args: argparse.Namespace) -> int:
    import labelmask

    known = labelmask.templates()
    if args.json:
        rows = [
            {"name": t.name, "source": t.origin, "matches": list(t.matches), "content": t.content_format}
            for t in known.values()
        ]
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(name) for name in known)
    print(f"{'name':<{width}}  content  hashes  source")
    for t in known.values():
        print(f"{t.name:<{width}}  {t.content_format:<7}  {len(t.matches):>6}  {t.origin}")
    print(f"\n{len(known)} annotated templates; `labelmask templates --json` lists the stock-template hashes")
    return 0


# ---------------------------------------------------------------------------- parser


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


_TOKENIZER_HELP = "tokenizer or processor folder, or a Hub model id (org/name) in the local Hugging Face cache"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labelmask",
        description="See and check the training labels labelmask computes for chat templates.",
        epilog="TOKENIZER is a local folder (save_pretrained output or a model snapshot) or a Hub model id "
        "(org/name) in the local Hugging Face cache; nothing is downloaded. DATASET or CONVERSATION - reads stdin.",
    )
    parser.add_argument("--version", action="version", version=f"labelmask {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--template", metavar="NAME_OR_FILE", help="a registered annotated template, or an annotated .jinja file"
        )
        p.add_argument(
            "--kwarg",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a template argument (enable_thinking=false); repeatable",
        )

    def formats(p: argparse.ArgumentParser) -> None:
        from labelmask._formats import FORMATS

        p.add_argument(
            "--format", choices=FORMATS, help="the rows' dataset format (default: detected from each object's keys)"
        )
        p.add_argument(
            "--column",
            action="append",
            default=[],
            metavar="KEY=NAME",
            help="the key holding a part of the row (prompt=question, messages=dialog); repeatable",
        )
        p.add_argument(
            "--tag",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a ShareGPT tag (role_tag=speaker, user_tag=USER, assistant_tag=BOT); repeatable",
        )

    show = commands.add_parser("show", help="print a conversation's tokens, coloured by role and trained / not")
    show.add_argument(
        "conversation",
        help="a .json conversation (messages, or a row: {messages, tools}, ShareGPT, Alpaca, prompt/completion), "
        "a .json list of rows, a .jsonl file, or - for stdin",
    )
    show.add_argument("tokenizer", metavar="TOKENIZER", help=_TOKENIZER_HELP)
    show.add_argument("--row", type=int, default=0, help="which line of a .jsonl file (from 0; default 0)")
    show.add_argument("--tools", metavar="FILE", help="a JSON file with the tool schemas")
    show.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="FILE",
        help="an image for the next image part that carries none (a processor folder); repeatable",
    )
    show.add_argument("--html", metavar="FILE", help="also write a standalone HTML report")
    show.add_argument(
        "--max-tokens",
        type=_count,
        default=50_000,
        metavar="N",
        help="refuse a conversation of more than N tokens (default 50000; the view takes about 1 KB a token); 0: "
        "no limit",
    )
    show.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="auto: colour on a terminal unless NO_COLOR is set; never: trained tokens in [brackets]",
    )
    common(show)
    formats(show)
    show.set_defaults(run=_show)

    check = commands.add_parser("check", help="property-test the mask of a tokenizer's chat template")
    check.add_argument("path", metavar="TOKENIZER", help=_TOKENIZER_HELP + " (its chat template is stock)")
    check.add_argument("--examples", type=int, default=100, help="conversations to draw (default 100)")
    check.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    check.add_argument("--eot", help="the end-of-turn string the template writes after a reply (checked as trained)")
    check.add_argument("--tools", action="store_true", help="draw tool definitions and tool calls")
    check.add_argument("--tool-role", action="store_true", help="draw tool results after tool calls")
    check.add_argument("--reasoning", action="store_true", help="draw reasoning")
    check.add_argument("--alternate", action="store_true", help="strict user/assistant alternation (Gemma)")
    check.add_argument("--no-system", action="store_true", help="never draw a system prompt")
    check.add_argument("--max-turns", type=int, default=8, help="most user/assistant exchanges (default 8)")
    check.add_argument(
        "--append-only",
        action="store_true",
        help="instead: check that the stock template is append-only (multi-turn RL): each turn's prompt plus "
        "reply stays a prefix of every later render, in text and token ids (tools, tool results and reasoning "
        "drawn; exit status 1 when not)",
    )
    common(check)
    check.set_defaults(run=_check)

    stats = commands.add_parser("stats", help="trained share per role over a JSONL dataset")
    stats.add_argument(
        "dataset",
        help="a .jsonl file, one row per line ({messages, tools}, messages, ShareGPT, Alpaca, prompt/completion), "
        "a .json list of rows, or - for stdin (JSON lines or one JSON document)",
    )
    stats.add_argument("tokenizer", metavar="TOKENIZER", help=_TOKENIZER_HELP)
    stats.add_argument("--max-length", type=int, help="truncate samples to this many tokens (counts truncations)")
    stats.add_argument(
        "--truncation", choices=("right", "left", "turns", "drop"), default="right", help="with --max-length"
    )
    stats.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (auto: on a terminal, for runs over --progress-delay seconds)",
    )
    stats.add_argument("--progress-delay", type=float, default=2.0, help=argparse.SUPPRESS)
    stats.add_argument("--json", action="store_true", help="print one JSON object (keys in docs/cli.md)")
    stats.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip and count lines that are not JSON or not a row in any format (default: stop, naming the line)",
    )
    stats.add_argument(
        "--fail-on-refused",
        action="store_true",
        help="exit with status 1 when any row was refused or skipped (default: 0)",
    )
    common(stats)
    formats(stats)
    stats.set_defaults(run=_stats)

    listing = commands.add_parser("templates", help="list the registered annotated templates and their sources")
    listing.add_argument("--json", action="store_true", help="as JSON, with the full stock-template hashes")
    listing.set_defaults(run=_templates)
    return parser


def _notes(command: str) -> Any:
    """A ``warnings.showwarning`` that writes each distinct warning once to stderr as one line,
    ``labelmask COMMAND: note: ...`` (``warning: Category: ...`` from other libraries), without
    Python's ``path:line:`` prefix and source line."""
    shown: set[tuple[type, str]] = set()

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        text = " ".join(str(message).split())
        if (category, text) in shown:
            return
        shown.add((category, text))
        label = "note" if category.__module__.startswith("labelmask") else f"warning: {category.__name__}"
        print(f"labelmask {command}: {label}: {text}", file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``labelmask`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            # labelmask's own warnings are notes the command always shows (once each); other libraries'
            # warnings follow the process's filters (-W, PYTHONWARNINGS), shown the same way.
            from labelmask.errors import NoEndOfTurnWarning, NotRenderedWarning

            for category in (NoEndOfTurnWarning, NotRenderedWarning):
                warnings.simplefilter("always", category)
            warnings.showwarning = _notes(args.command)
            return args.run(args)
    except CliError as e:
        print(f"labelmask {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `labelmask show ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
