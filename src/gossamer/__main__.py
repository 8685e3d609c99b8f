from gossamer.cli.main import main

main()
