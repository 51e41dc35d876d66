"""Large buffers freed by any executor thread are reused, not kept per thread: RSS stays flat."""

import subprocess
import sys
import textwrap

CHURN = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np, psutil
    from showme_ros.allocator import keep_memory_flat

    applied = keep_memory_flat() if sys.argv[1] == "on" else False

    def frame_work(i):  # what a request with a 27 MiB camera frame allocates and frees
        frame = np.ones((3072, 3072, 3), np.uint8)
        crop = frame[: 2048 + i % 512].copy()
        return int(np.ascontiguousarray(crop[:, :1024])[0, 0, 0])

    with ThreadPoolExecutor(6) as pool:
        for round in range(30):
            list(pool.map(frame_work, range(round * 6, round * 6 + 6)))
    print(applied, psutil.Process().memory_info().rss >> 20)
    """
)


def churn(setting: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHURN, setting], capture_output=True, text=True, check=True
    )
    applied, rss_mib = out.stdout.split()
    return applied, int(rss_mib)


def test_freed_frames_do_not_stay_resident():
    applied, rss_on = churn("on")
    _, rss_off = churn("off")
    assert applied == "True"
    assert rss_on < 150, rss_on  # the interpreter and numpy: about 30 MiB
    assert rss_off > rss_on + 100, (rss_off, rss_on)  # what the setting prevents
