"""``python -m slmgraph.testing.fault_server --port N``: run the fault-injection model server.

Prints one line, ``READY <api url> <control url>``, once both ports listen, then
serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio

from ._app import FaultApp


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m slmgraph.testing.fault_server", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="API port (0: any free port)")
    p.add_argument("--control-port", type=int, default=0, help="control port (0: any free port)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    p.add_argument("--parallel", type=int, default=4, help="requests served at once (OLLAMA_NUM_PARALLEL)")
    p.add_argument("--max-queue", type=int, default=512, help="requests waiting before 503 (OLLAMA_MAX_QUEUE)")
    p.add_argument("--reply", default="ok", help="reply text; $USER is replaced by the last user message")
    p.add_argument("--models", default="fault-model", help="comma-separated model names the server has")
    args = p.parse_args(argv)

    async def run() -> None:
        app = FaultApp(
            args.host, args.port, args.control_port,
            latency=args.latency, parallel=args.parallel, max_queue=args.max_queue,
            reply=args.reply, models=[m for m in args.models.split(",") if m],
        )  # fmt: skip
        await app.start()
        print(f"READY http://{args.host}:{app.port} http://{args.host}:{app.control_port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
