"""Run `avengers serve NAME` in a child process, as an operator would."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

SERVING = re.compile(rb"avengers (\S+) serving on \S+:(\d+)")


async def start_serve(*args: str, timeout: float = 120) -> tuple[asyncio.subprocess.Process, int]:
    """Start ``avengers serve ARGS``; return the process and its port once it serves."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avengers", "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = b""
    try:
        async with asyncio.timeout(timeout):
            while True:
                line = await process.stdout.readline()
                if not line:
                    raise AssertionError(f"avengers serve {' '.join(args)} exited: {output.decode()}")
                output += line
                match = SERVING.search(line)
                if match:
                    return process, int(match.group(2))
    except BaseException:
        process.kill()
        await process.wait()
        raise


async def stop_serve(process: asyncio.subprocess.Process, timeout: float = 60) -> int:
    """SIGTERM, wait for the graceful exit; the exit status."""
    process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout):
            await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode
