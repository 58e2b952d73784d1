from newsletter.cli.start import main

main()
