from kubevolve.cli.app import main

main()
