from apollo.cli.main import main

main()
