"""What every benchmark run needs: the task and method interfaces, the explicit registry, the
runner, the keys and result store, machine info. Imports nothing from the other subpackages."""
