package stationagent

import "errors"

func errorsIsConfig(err error) bool   { return errors.Is(err, ErrConfig) }
func errorsIs(err, target error) bool { return errors.Is(err, target) }
