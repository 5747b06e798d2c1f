from inferpay_cli.main import cli

cli()
