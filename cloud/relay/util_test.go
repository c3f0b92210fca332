package relay_test

import "math/big"

type bigInt = big.Int

func bigOne() *big.Int { return big.NewInt(1) }
