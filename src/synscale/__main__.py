from synscale.cli import main

raise SystemExit(main())
