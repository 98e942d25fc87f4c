from bridge.cli import main

if __name__ == "__main__":  # the pipeline process is spawned and re-imports this module
    main()
