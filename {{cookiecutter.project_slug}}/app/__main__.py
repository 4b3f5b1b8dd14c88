import sys

if sys.argv[1:2] == ["migrate"]:
    from .db.cli import migrate_main

    migrate_main(sys.argv[2:])
else:
    from .server import main

    main()
