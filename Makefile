# Trellis front door. `make run` and `make test` work on a fresh Debian machine.
BUILD      ?= build
BUILD_SAN  ?= build-asan
BUILD_FUZZ ?= build-fuzz
BUILD_COV  ?= build-cov
JOBS       ?= $(shell nproc)
DATA       ?= ./data

.PHONY: all deps build build-asan run test test-unit test-e2e test-asan bench fuzz coverage format clean npm

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

run: build
	./$(BUILD)/trellis up --data $(DATA)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

npm: deps node_modules/.package-lock.json

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-e2e: build npm
	TRELLIS_BIN=$(abspath $(BUILD))/trellis node --test --test-concurrency=2 tests/e2e/

test-asan: build-asan npm
	cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)
	TRELLIS_BIN=$(abspath $(BUILD_SAN))/trellis ASAN_OPTIONS=detect_leaks=1 TRELLIS_E2E_SANITIZED=1 \
		node --test --test-concurrency=2 tests/e2e/

test: test-unit test-e2e test-asan

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
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_FUZZ) $(BUILD_COV)
