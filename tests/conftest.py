pytest_plugins = ["conftest_sendgrid"]
