"""``python -m pipeline.cli``: the ``slukd`` command."""

from pipeline.cli.main import main

raise SystemExit(main())
