// Patro: objects that live in one process, used from other processes and hosts through proxies.
// The one header to include.
#pragma once

#include "patro/broker.hpp"
#include "patro/client.hpp"
#include "patro/config.hpp"
#include "patro/containers.hpp"
#include "patro/curve.hpp"
#include "patro/error.hpp"
#include "patro/filehandle.hpp"
#include "patro/future.hpp"
#include "patro/logging.hpp"
#include "patro/object.hpp"
#include "patro/options.hpp"
#include "patro/server.hpp"
#include "patro/signals.hpp"
#include "patro/spawn.hpp"
#include "patro/sync.hpp"
#include "patro/task.hpp"
#include "patro/value.hpp"
