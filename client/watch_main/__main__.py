"""``python -m multipassdedup.client.watch_main``: runs ``mpd-watch`` (see ``client/watch/main.py``)."""

import sys

from ..watch.main import main

sys.exit(main())
