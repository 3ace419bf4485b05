"""`python -m devcluster.relay LISTEN_HOST:PORT TARGET_HOST:PORT`: a plain TCP relay.

The embedded API server listens on 127.0.0.1 only, which a pod's network namespace cannot reach.
The real node puts this relay on its bridge address and points the `kubernetes` Service's
endpoints at it, so pods reach the API server at its ClusterIP (10.96.0.1:443, kube-proxy's
DNAT) as in any cluster; TLS passes through untouched (the serving certificate names 10.96.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, *listen)
    async with server:
        await server.serve_forever()


def parse(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parse(args[0]), parse(args[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
