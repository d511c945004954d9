"""The same workload's routes built two other ways, for comparison with todo-api."""
