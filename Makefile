# Trellis front door. `make run` and `make test` work on a fresh Debian machine.
BUILD      ?= build
BUILD_SAN  ?= build-asan
BUILD_FUZZ ?= build-fuzz
BUILD_REL  ?= build-release
BUILD_COV  ?= build-cov
JOBS       ?= $(shell nproc)
DATA       ?= ./data

.PHONY: all deps build build-asan build-release run test test-unit test-e2e test-asan bench fuzz coverage format clean npm

# PostgreSQL for the tests: `make test` starts one throwaway cluster
# (scripts/pg-cluster.sh) for the whole run and exports TRELLIS_TEST_PG_URL;
# a target run on its own starts its own unless that is already set.
PG_RUN = $(if $(TRELLIS_TEST_PG_URL),,$(CURDIR)/scripts/pg-cluster.sh run)
# The e2e files the release build runs with every service on PostgreSQL.
E2E_PG_TESTS ?= tests/e2e/

# The e2e runner: files in parallel; a test that hangs fails after 3 minutes,
# and handles a failed test leaves open cannot keep the run alive.
NODE_TEST = node --test --test-concurrency=2 --test-timeout=180000 --test-force-exit

all: build

deps:
	@./scripts/deps.sh

$(BUILD)/Makefile:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

# The sanitizer build uses clang, so every `make test` compiles with both
# compilers under -Werror.
$(BUILD_SAN)/Makefile:
	cmake -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DTRELLIS_SANITIZE=ON

build-asan: deps $(BUILD_SAN)/Makefile
	cmake --build $(BUILD_SAN) -j $(JOBS)

# Release (-O3, NDEBUG) with gcc, compile only: optimisation-only warnings
# (-Wmaybe-uninitialized) must not break a release build.
$(BUILD_REL)/Makefile:
	cmake -S . -B $(BUILD_REL) -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=gcc -DTRELLIS_TESTS=OFF

build-release: deps $(BUILD_REL)/Makefile
	cmake --build $(BUILD_REL) -j $(JOBS)

run: build
	./$(BUILD)/trellis up --data $(DATA)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

npm: deps node_modules/.package-lock.json

test-unit: build
	cd $(BUILD) && $(PG_RUN) ctest --output-on-failure -j $(JOBS)

# Release build: e2e on PostgreSQL. (The ASan build runs the suite on SQLite.)
test-e2e: build npm
	TRELLIS_BIN=$(abspath $(BUILD))/trellis TRELLIS_E2E_DB=postgres \
		$(PG_RUN) $(NODE_TEST) $(E2E_PG_TESTS)

# The whole e2e suite on SQLite with the release build.
test-e2e-sqlite: build npm
	TRELLIS_BIN=$(abspath $(BUILD))/trellis $(NODE_TEST) tests/e2e/

test-asan: build-asan npm
	cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		$(PG_RUN) ctest --output-on-failure -j $(JOBS)
	TRELLIS_BIN=$(abspath $(BUILD_SAN))/trellis ASAN_OPTIONS=detect_leaks=1 TRELLIS_E2E_SANITIZED=1 \
		$(PG_RUN) $(NODE_TEST) tests/e2e/

# One PostgreSQL cluster for the whole run, stopped afterwards even on failure.
# The gcc Release build is compiled too (every build type must be clean).
test: build build-asan build-release npm
	./scripts/pg-cluster.sh run $(MAKE) --no-print-directory test-unit test-e2e test-asan

bench: build
	./scripts/deps.sh bench
	./bench/run.sh $(BUILD)/trellis
	./bench/gateway.sh $(BUILD)/trellis

fuzz: deps
	cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DTRELLIS_FUZZ=ON
	cmake --build $(BUILD_FUZZ) -j $(JOBS)
	./tests/fuzz/run.sh $(BUILD_FUZZ)

# Line and branch coverage of src/ by the unit and e2e suites (gcc
# --coverage in its own build dir, report by gcovr). Not part of `make test`.
coverage: deps npm
	./scripts/deps.sh coverage
	./scripts/coverage.sh $(BUILD_COV) $(JOBS)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_FUZZ) $(BUILD_REL) $(BUILD_COV)
