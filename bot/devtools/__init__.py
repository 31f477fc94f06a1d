"""Tools around the product: the sandbox BlueKing servers, the scenario corpus and its runner, the demo set-up, case export."""
