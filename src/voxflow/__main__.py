from voxflow.cli import main

raise SystemExit(main())
