"""The objects every layer above shares: the state space, sampling procedures, the model protocol, the Operator."""
