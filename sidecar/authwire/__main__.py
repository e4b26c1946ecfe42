from authwire.cli import main

raise SystemExit(main())
