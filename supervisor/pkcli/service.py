"""supervisor service: run the supervisor."""


def default_command(port=None, data_dir=None, host=None, test_codes=False):
    """Start the supervisor (local driver, 127.0.0.1:8000, data in ./var).

    Args:
        port (int): port to listen on
        data_dir (str): where the store and run directories live
        host (str): address to listen on (loopback by default)
        test_codes (bool): add the test codes to the catalog
    """
    from supervisor import config, server

    server.serve(
        config.load(
            port=int(port) if port is not None else None,
            data_dir=data_dir,
            host=host,
            test_codes=True if test_codes else None,
        )
    )
