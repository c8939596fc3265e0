"""The ``voxmill`` command: how every process starts (API, one worker pool per queue, beat,
Flower), the embedded renderer and demo, database migrations, model assets, tenants and API keys."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from jobs.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"

DEFAULT_POOLS = {
    # One process per GPU holding the model once; the GPU is the parallelism.
    "sovits": ("solo", 1),
    # The T2S model runs on CPU with torch's own threads; one process avoids N copies of it.
    "gpt": ("solo", 1),
    # Audio finishing and uploads are short and I/O-bound: threads keep one copy of the scorers.
    "post": ("threads", 4),
}


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from db.migrate import upgrade

    settings = _settings()
    if settings.db_url.startswith("sqlite"):
        settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.db_url)
    print(f"database at head: {settings.db_url.split('@')[-1]}")
    return 0


def cmd_storage_init(args: argparse.Namespace) -> int:
    from jobs.storage import S3Storage, create_storage

    settings = _settings()
    storage = create_storage(settings)
    if isinstance(storage, S3Storage):
        storage.ensure_bucket()
        print(f"bucket ready: {storage.bucket}")
    else:
        print(f"objects folder ready: {settings.storage_dir}")
    return 0


def _refuse_to_start(settings: Settings, what: str) -> bool:
    """True (after saying why on stderr) when a distributed process must not start."""
    problem = settings.startup_problem()
    if problem:
        print(f"voxmill {what}: refusing to start: {problem}", file=sys.stderr)
    return problem is not None


def cmd_api(args: argparse.Namespace) -> int:
    settings = _settings()
    if _refuse_to_start(settings, "api"):
        return 2
    import uvicorn

    from api_min.app import create_app
    from jobs.logs import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    # uvicorn's standard extras, as production runs it: httptools parses requests and uvloop runs
    # the loop. The upload limits (api_min.limits) are tested on this server.
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings.embedded:
        print("voxmill worker needs VOXMILL_MODE=distributed (embedded mode runs every stage in-process)", file=sys.stderr)
        return 2
    if _refuse_to_start(settings, "worker"):
        return 2
    from jobs.logs import configure_logging
    from jobs.runtime import Runtime

    configure_logging(settings.log_level, settings.log_json)
    runtime = Runtime(settings)
    from jobs.metrics import start_worker_exporter, worker_port

    port = args.metrics_port if args.metrics_port is not None else worker_port(args.queue, settings.metrics_port)
    start_worker_exporter(args.queue, port, settings.metrics_addr)
    pool, concurrency = DEFAULT_POOLS[args.queue]
    if args.queue == "gpt" and settings.gpt_batch_size > 1:
        # Batching across jobs (jobs/batching.py): one thread per message, one model. Twice the
        # batch size, so the next batch fills while one runs; with only N threads the batches
        # alternate in size (3 + 5 for N = 8, measured by bench/render.py).
        pool, concurrency = "threads", 2 * settings.gpt_batch_size
    pool = args.pool or pool
    concurrency = args.concurrency or concurrency
    if pool in ("solo", "threads") and args.queue in ("gpt", "sovits") and not args.lazy:
        _preload(runtime, args.queue)
    if pool != "prefork":
        # Celery recycles prefork children by memory itself; solo and thread pools recycle the
        # whole process (warm shutdown, then the supervisor restarts it).
        from jobs.recycling import install as install_recycling

        install_recycling(settings.worker_max_memory_per_child_kb)
    argv = [
        "worker",
        "--queues",
        args.queue,
        "--hostname",
        f"{args.queue}@%h" + (f"-{args.name}" if args.name else ""),
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        settings.log_level,
        "--task-events",
        "--without-gossip",
        "--without-mingle",
    ]
    runtime.celery.worker_main(argv)
    return 0


def _preload(runtime: Any, queue: str) -> None:
    """Load the queue's models before taking the first message, so the first task is not slow."""
    if queue == "gpt":
        runtime.semantic_engine
        if runtime.settings.gpt_batch_size > 1:
            runtime.semantic_batcher
    else:
        runtime.acoustic_engine
        runtime.voice_encoder


def cmd_beat(args: argparse.Namespace) -> int:
    from jobs.runtime import Runtime

    settings = _settings()
    if _refuse_to_start(settings, "beat"):
        return 2
    schedule = settings.home / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    Runtime(settings).celery.start(["beat", "--schedule", str(schedule), "--loglevel", settings.log_level])
    return 0


def cmd_flower(args: argparse.Namespace) -> int:
    from jobs.runtime import Runtime

    Runtime(_settings()).celery.start(["flower", f"--port={args.port}", f"--address={args.host}"])
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from jobs.runtime import Runtime
    from jobs.sweeper import sweep

    report = sweep(Runtime(_settings()), stale_after_s=args.stale_after)
    print(f"re-enqueued {report.total} items")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from infra.embedded import render

    return render(
        text_path=args.input,
        voice=args.voice,
        transcript=_read_transcript(args),
        language=args.language,
        out_dir=Path(args.out),
        output_format=args.format,
        home=Path(args.home) if args.home else None,
        engine=args.engine,
        models_dir=Path(args.models) if args.models else None,
        project=args.project,
        options=_json_arg(args.options),
        progress=not args.quiet,
    )


def _json_arg(value: str | None) -> dict[str, Any]:
    """A JSON object given inline or as the path of a file holding it."""
    import json

    if not value:
        return {}
    text = Path(value).read_text(encoding="utf-8") if Path(value).is_file() else value
    parsed = json.loads(text)
    if not isinstance(parsed, dict):
        raise SystemExit("--options must be a JSON object")
    return parsed


def cmd_submit(args: argparse.Namespace) -> int:
    from infra.remote import submit

    return submit(
        server=args.server,
        input_path=args.input,
        voice=args.voice,
        transcript=_read_transcript(args),
        language=args.language,
        output_format=args.format,
        project=args.project,
        options=_json_arg(args.options),
        out_dir=Path(args.out) if args.out else None,
        wait=not args.no_wait,
        api_key=args.api_key,
        progress=not args.quiet,
        timeout_s=args.timeout,
    )


def _read_transcript(args: argparse.Namespace) -> str | None:
    if args.transcript_file:
        return Path(args.transcript_file).read_text(encoding="utf-8").strip()
    return args.transcript


def cmd_demo(args: argparse.Namespace) -> int:
    from infra.embedded import demo

    return demo(tiny=args.tiny, out_dir=Path(args.out), home=Path(args.home) if args.home else None)


def cmd_models_pull(args: argparse.Namespace) -> int:
    from workers.assets import PullRefused, missing_files, missing_message, pull

    settings = _settings()
    root = Path(args.dir) if args.dir else settings.models_dir or Path("var/models")
    try:
        status = pull(root, include_g2pw=args.g2pw, generation=args.generation, revision=args.revision)
    except PullRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    if status and args.generation == "v2" and missing_files(root):
        print(missing_message(root), file=sys.stderr)
    return status


def _registry() -> Any:
    from db.migrate import upgrade
    from jobs.runtime import Runtime

    runtime = Runtime(_settings())
    if runtime.settings.embedded:
        runtime.settings.home.mkdir(parents=True, exist_ok=True)
        upgrade(runtime.settings.db_url)
    return runtime


def _tenant_id(session: Any, name: str | None) -> Any:
    from jobs.tenants import tenant_by_name

    return tenant_by_name(session, name).id if name else None


def cmd_models_add(args: argparse.Namespace) -> int:
    from jobs.models import ModelError, add_model
    from jobs.tenants import TenantError

    runtime = _registry()
    try:
        with runtime.transaction() as session:
            model = add_model(
                session, runtime.settings, args.name, Path(args.gpt), Path(args.sovits), _tenant_id(session, args.tenant)
            )
            print(f"model {model.name}: {model.generation}, gpt sha256 {model.gpt_sha256}, sovits sha256 {model.sovits_sha256}")
    except (ModelError, TenantError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from db.models import Tenant
    from jobs.models import all_models

    runtime = _registry()
    default = runtime.settings.default_model
    with runtime.transaction() as session:
        tenants = {t.id: t.name for t in session.query(Tenant).all()}
        print("name\tscope\tgeneration\tgpt sha256\tsovits sha256\tgpt\tsovits")
        for m in all_models(session):
            scope = tenants.get(m.tenant_id, "?") if m.tenant_id else "deployment"
            mark = " (default)" if m.tenant_id is None and m.name == default else ""
            print(
                f"{m.name}{mark}\t{scope}\t{m.generation}\t{m.gpt_sha256[:12]}\t{m.sovits_sha256[:12]}"
                f"\t{m.gpt_path}\t{m.sovits_path}"
            )
    runtime.close()
    return 0


def cmd_models_remove(args: argparse.Namespace) -> int:
    from jobs.models import ModelError, remove_model
    from jobs.tenants import TenantError

    runtime = _registry()
    try:
        with runtime.transaction() as session:
            remove_model(session, _tenant_id(session, args.tenant), args.name)
        print(f"removed model {args.name}")
    except (ModelError, TenantError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    return 0


def cmd_models_check(args: argparse.Namespace) -> int:
    from workers.assets import report_missing

    settings = _settings()
    return report_missing(Path(args.dir) if args.dir else settings.models_dir or Path("var/models"))


def cmd_models_make_tiny(args: argparse.Namespace) -> int:
    from workers.assets import make_tiny

    gpt, sovits = make_tiny(Path(args.dir), full_size=args.full_size, seed=args.seed, generation=args.generation)
    print(f"wrote {'full-size' if args.full_size else 'tiny'} random {args.generation} models to {args.dir}")
    if args.generation != "v2":
        # The default paths under the models folder are the v2 ones; name this pair instead.
        print(f"use them with: VOXMILL_GPT_CHECKPOINT={gpt} VOXMILL_SOVITS_CHECKPOINT={sovits}")
    if args.generation in ("v2Pro", "v2ProPlus"):
        print("note: the speaker-verification model that Pro voices need is not written by this build yet")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxmill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database migrations").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="migrate the database to the latest schema").set_defaults(func=cmd_db_upgrade)

    storage = sub.add_parser("storage", help="object storage").add_subparsers(dest="storage_command", required=True)
    storage.add_parser("init", help="create the S3 bucket if it is missing (the local folder needs nothing)").set_defaults(
        func=cmd_storage_init
    )

    api = sub.add_parser("api", help="run the HTTP API (uvicorn)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run one worker pool")
    worker.add_argument("--queue", required=True, choices=sorted(DEFAULT_POOLS))
    worker.add_argument("--pool", choices=["solo", "prefork", "threads"])
    worker.add_argument("--concurrency", type=int)
    worker.add_argument("--name", help="suffix for the worker's hostname (several pools per host)")
    worker.add_argument("--lazy", action="store_true", help="load models on the first task, not at start")
    worker.add_argument(
        "--metrics-port", type=int, help="Prometheus exporter port (default 9101/9102/9103 by queue; 0: off)"
    )
    worker.set_defaults(func=cmd_worker)

    sub.add_parser("beat", help="run Celery beat (the sweeper's schedule)").set_defaults(func=cmd_beat)

    flower = sub.add_parser("flower", help="run Flower, the Celery dashboard")
    flower.add_argument("--host", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=5555)
    flower.set_defaults(func=cmd_flower)

    sweep = sub.add_parser("sweep", help="re-enqueue lost work once (beat does this every 30 s)")
    sweep.add_argument("--stale-after", type=float, default=None)
    sweep.set_defaults(func=cmd_sweep)

    render = sub.add_parser("render", help="render a book (text, Markdown, EPUB) in a voice, in-process (embedded mode)")
    render.add_argument("input", help="a text, Markdown or EPUB file, or - for standard input")
    render.add_argument("--voice", required=True, help="reference audio of the voice, or a stored voice's name or id")
    render.add_argument("--transcript", help="what the reference says (omit for reference-free mode)")
    render.add_argument("--transcript-file")
    render.add_argument("--language", default="auto", choices=["auto", "zh", "en", "ja"])
    render.add_argument("--format", default="wav")
    render.add_argument("--out", default="out")
    render.add_argument("--home", help="state folder (database, objects); default ./var")
    render.add_argument("--models", help="models folder")
    render.add_argument("--project", help="project name (default: the file's name); a re-render reuses its segments")
    render.add_argument("--options", help='book options as JSON or a JSON file: {"pauses": …, "lexicon": …}')
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    render.add_argument("--engine", help=argparse.SUPPRESS)
    render.set_defaults(func=cmd_render)

    submit = sub.add_parser("submit", help="submit a book to a running API and wait for its files")
    submit.add_argument("input", help="a text, Markdown or EPUB file")
    submit.add_argument("--server", required=True, help="the API's base URL, e.g. http://127.0.0.1:8000")
    submit.add_argument("--voice", required=True, help="a voice's name or id, or reference audio to upload")
    submit.add_argument("--transcript", help="what the reference says (when --voice is a file)")
    submit.add_argument("--transcript-file")
    submit.add_argument("--language", default="auto", choices=["auto", "zh", "en", "ja"])
    submit.add_argument("--format", default="mp3")
    submit.add_argument("--project", help="project name (default: the file's name)")
    submit.add_argument("--options", help="book options as JSON or a JSON file")
    submit.add_argument("--out", help="download the files here once the job succeeds")
    submit.add_argument("--no-wait", action="store_true", help="print the job and return at once")
    submit.add_argument("--api-key", help="bearer key when the API requires one")
    submit.add_argument("--timeout", type=float, default=24 * 3600, help="seconds to wait for the job")
    submit.add_argument("--quiet", action="store_true", help="no progress bar")
    submit.set_defaults(func=cmd_submit)

    demo = sub.add_parser("demo", help="render the sample chapter in the sample voice")
    demo.add_argument("--tiny", action="store_true", help="tiny random models: noise, but every stage real")
    demo.add_argument("--out", default="out/demo")
    demo.add_argument("--home", help="state folder; default ./var")
    demo.set_defaults(func=cmd_demo)

    models = sub.add_parser("models", help="model assets").add_subparsers(dest="models_command", required=True)
    from workers.assets import PINNED_REVISION, PULL_FILES

    pull = models.add_parser("pull", help="download the official GPT-SoVITS files of a generation, from a pinned commit")
    pull.add_argument("--dir")
    pull.add_argument("--generation", default="v2", choices=list(PULL_FILES))
    pull.add_argument(
        "--revision", default=PINNED_REVISION, help="the hub commit (40-hex sha) to download from; branch names are refused"
    )
    pull.add_argument("--g2pw", action="store_true", help="also fetch the optional G2PW model")
    pull.set_defaults(func=cmd_models_pull)
    add = models.add_parser("add", help="register a GPT + SoVITS pair under a name")
    add.add_argument("name")
    add.add_argument("--gpt", required=True, help="the GPT (T2S) .ckpt file")
    add.add_argument("--sovits", required=True, help="the SoVITS .pth file")
    add.add_argument("--tenant", help="register for this tenant only (default: the whole deployment)")
    add.set_defaults(func=cmd_models_add)
    models.add_parser("list", help="list registered models").set_defaults(func=cmd_models_list)
    remove = models.add_parser("remove", help="remove a registered model (refused while voices name it)")
    remove.add_argument("name")
    remove.add_argument("--tenant", help="the tenant the model belongs to (default: a deployment model)")
    remove.set_defaults(func=cmd_models_remove)
    check = models.add_parser("check", help="say which model files are missing and where they go")
    check.add_argument("--dir")
    check.set_defaults(func=cmd_models_check)
    tiny = models.add_parser("make-tiny", help="write random models in the official formats")
    tiny.add_argument("dir")
    tiny.add_argument("--full-size", action="store_true", help="the generation's official dimensions (random weights)")
    tiny.add_argument(
        "--generation", default="v2", choices=["v1", "v2", "v2Pro", "v2ProPlus"], help="model generation (default v2)"
    )
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_models_make_tiny)

    from infra.admin import add_parsers as add_admin_parsers

    add_admin_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Model loading happens in batch processes; progress bars only clutter their logs.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
