from spsr_cli.cli.app import main

main()
