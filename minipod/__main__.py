from minipod.cli import main

raise SystemExit(main())
