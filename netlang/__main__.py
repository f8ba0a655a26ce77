from netlang.cli import main

raise SystemExit(main())
