"""The ``labelmask`` command: look at masks, prove a template, survey a dataset.

Commands::

    labelmask show CONVERSATION TOKENIZER [--html FILE]   the tokens, coloured by role and trained / not
    labelmask check TOKENIZER [--template NAME_OR_FILE]    property checks of labelmask.testing, a verdict table
    labelmask stats DATASET TOKENIZER                      trained share per role over a JSONL dataset
    labelmask templates                                    the registered annotated templates

``show`` and ``stats`` read rows in the dataset formats :func:`labelmask.mask_dataset` reads (OpenAI
``messages``, ShareGPT, Alpaca, TRL prompt/completion), detected from each object's keys or named with
``--format``, ``--column KEY=NAME`` and ``--tag KEY=VALUE``; a ``.json`` file holds one conversation or a
list of rows (LLaMA-Factory's files).

``TOKENIZER`` is a local folder holding a tokenizer or processor (what
``save_pretrained`` writes, or a model snapshot); nothing is downloaded.

Exit status: 0 on success; 1 when ``check`` finds an invariant that does not hold;
2 for a bad argument or input (a missing path, a malformed file, a conversation
labelmask refuses), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

_JSONL = (".jsonl", ".ndjson")


class CliError(Exception):
    """A problem with the command's input: printed as ``labelmask <command>: error: ...``, exit status 2."""


# ---------------------------------------------------------------------------- inputs


def _load_processor(path: str) -> Any:
    """The tokenizer (or processor) saved in the folder ``path``, loaded without network access."""
    folder = Path(path)
    if not folder.exists():
        raise CliError(f"{path}: no such file or directory (expected a tokenizer or processor folder)")
    if not folder.is_dir():
        raise CliError(f"{path}: not a folder; give the folder that holds tokenizer.json / tokenizer_config.json")
    is_processor = (folder / "processor_config.json").exists() or (folder / "preprocessor_config.json").exists()
    try:
        if is_processor:  # imported only when needed: it pulls in torch and the image stack
            from transformers import AutoProcessor

            return AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError... for a folder it cannot read
        raise CliError(f"{path}: cannot load a tokenizer from this folder ({type(e).__name__}: {e})") from e


def _read_json_records(path: str) -> list[tuple[str, Any]]:
    """``(where, value)`` for each JSON value of the file: one for ``.json``, one per non-blank line for JSONL."""
    file = Path(path)
    if not file.exists():
        raise CliError(f"{path}: no such file")
    if not file.is_file():
        raise CliError(f"{path}: not a file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CliError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    if file.suffix.lower() in _JSONL:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}:{n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise CliError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from e
        if not records:
            raise CliError(f"{path}: no JSON lines")
        return records
    try:
        return [(path, json.loads(text))]
    except json.JSONDecodeError as e:
        raise CliError(
            f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); a .json file holds one conversation, "
            "a .jsonl file one per line"
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


def _dataset_rows(records: list[tuple[str, Any]], args: argparse.Namespace) -> list[tuple[str, Any]]:
    """A ``.json`` file holding a list of dataset rows (LLaMA-Factory's files) as one record per row."""
    from labelmask.errors import LabelmaskError

    if len(records) != 1 or not isinstance(records[0][1], list) or not records[0][1]:
        return records
    where, rows = records[0]
    if not all(isinstance(row, dict) for row in rows):
        return records
    try:
        _row_format(rows[0], args)
    except LabelmaskError:  # a list of messages, not of rows
        return records
    return [(f"{where}[{i}]", row) for i, row in enumerate(rows)]


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

    records = _dataset_rows(_read_json_records(args.conversation), args)
    if not 0 <= args.row < len(records):
        raise CliError(f"--row {args.row}: {args.conversation} has {len(records)} conversation(s) (rows 0..)")
    where, value = records[args.row]
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
        page = _view.render_html(out, title=f"labelmask show {Path(args.conversation).name}")
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


# ---------------------------------------------------------------------------- stats


def _stats(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from labelmask import _view
    from labelmask.errors import LabelmaskError, TruncationError

    if args.max_length is not None and args.max_length < 1:
        raise CliError(f"--max-length {args.max_length}: use a positive number")
    records = _dataset_rows(_read_json_records(args.dataset), args)
    processor = _load_processor(args.tokenizer)
    args.template = _resolve_template(args.template, processor)
    kwargs = _template_kwargs(args.kwarg, processor)
    if args.max_length is not None:
        kwargs.update(max_length=args.max_length, truncation=args.truncation)
    per_role: dict[str, list[int]] = {name: [0, 0] for name in _view.ROLE_NAMES.values()}
    n_rows = n_truncated = n_empty = n_tokens = n_trained = n_cut = 0
    errors: dict[str, list] = {}
    not_rendered: dict[str, list[int]] = {}  # field -> [messages, samples]
    disable = {"auto": None, "always": False, "never": True}[args.progress]
    # delay: a progress bar appears only on runs long enough to want one.
    for where, value in tqdm(records, desc="masking", unit="row", disable=disable, delay=args.progress_delay):
        n_rows += 1
        try:
            messages, tools = _conversation(where, value, args)
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
        for field in {f for _, f in report.not_rendered}:
            counts = not_rendered.setdefault(field, [0, 0])
            counts[0] += sum(1 for _, f in report.not_rendered if f == field)
            counts[1] += 1
        for count in _view.role_counts(out):
            per_role[count.role][0] += count.tokens
            per_role[count.role][1] += count.trained
    n_masked = n_rows - sum(n for n, _ in errors.values())
    print(f"labelmask stats {args.dataset}: {n_rows} samples, {n_masked} masked, {n_tokens} tokens")
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
    limit = f" (max_length={args.max_length}, truncation={args.truncation})" if args.max_length else ""
    print(f"samples truncated: {n_truncated}{limit}, {n_cut} tokens cut")
    print(f"samples with nothing to train: {n_empty}")
    for field, (n_messages, n_samples) in sorted(not_rendered.items()):
        print(f"not rendered by the template, {field}: {n_messages} messages in {n_samples} samples")
    for name, (n, first) in sorted(errors.items()):
        print(f"samples refused, {name}: {n} (first: {first})")
    return 0


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labelmask",
        description="See and check the training labels labelmask computes for chat templates.",
        epilog="TOKENIZER is a local folder (save_pretrained output or a model snapshot); nothing is downloaded.",
    )
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
        "a .json list of rows, or a .jsonl file",
    )
    show.add_argument("tokenizer", metavar="TOKENIZER", help="tokenizer or processor folder")
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
    check.add_argument("path", metavar="TOKENIZER", help="tokenizer or processor folder (its chat template is stock)")
    check.add_argument("--examples", type=int, default=100, help="conversations to draw (default 100)")
    check.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    check.add_argument("--eot", help="the end-of-turn string the template writes after a reply (checked as trained)")
    check.add_argument("--tools", action="store_true", help="draw tool definitions and tool calls")
    check.add_argument("--tool-role", action="store_true", help="draw tool results after tool calls")
    check.add_argument("--reasoning", action="store_true", help="draw reasoning")
    check.add_argument("--alternate", action="store_true", help="strict user/assistant alternation (Gemma)")
    check.add_argument("--no-system", action="store_true", help="never draw a system prompt")
    check.add_argument("--max-turns", type=int, default=8, help="most user/assistant exchanges (default 8)")
    common(check)
    check.set_defaults(run=_check)

    stats = commands.add_parser("stats", help="trained share per role over a JSONL dataset")
    stats.add_argument(
        "dataset",
        help="a .jsonl file, one row per line ({messages, tools}, messages, ShareGPT, Alpaca, prompt/completion), "
        "or a .json list of rows",
    )
    stats.add_argument("tokenizer", metavar="TOKENIZER", help="tokenizer or processor folder")
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
    common(stats)
    formats(stats)
    stats.set_defaults(run=_stats)

    listing = commands.add_parser("templates", help="list the registered annotated templates and their sources")
    listing.add_argument("--json", action="store_true", help="as JSON, with the full stock-template hashes")
    listing.set_defaults(run=_templates)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``labelmask`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except CliError as e:
        print(f"labelmask {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `labelmask show ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
