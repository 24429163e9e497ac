"""What the tests share, one module per concern; test modules import from here, never from each other.

- ``frames``: the test clips' size and rate, PSNR, the moving test clip, the golden cases.
- ``waiting``: ``wait_until``, the one way a test polls for something to happen.
- ``commands``: the console scripts (``mpd-client``, ``mpd-daemon``, ...) run as processes, and ffmpeg.
- ``daemons``: a daemon in-process or as an ``mpd-daemon`` process, raw protocol sessions, TLS certificates.
- ``pipelines``: the engine run as the golden cases run it, and the memory it holds.
- ``abusive_clients``: hostile clients of a daemon, as scripts run in processes of their own.
- ``gimm_synthetic``: synthetic GIMM-VFI-R weights written as a user's two files.

The tests import them as ``from helpers.frames import psnr``: ``tests/`` is on ``sys.path`` because pytest
inserts the folder of ``tests/conftest.py`` (``tests/`` is not a package), and because a script run from
``tests/`` (``python tests/gimm_memory_probe.py``) has its own folder first on ``sys.path``.
"""
