-- login.lua - POST /api/auth/login, every request a correct login. CPU bound
-- by argon2id.
--
-- The service counts a login attempt against its e-mail before the password
-- is checked (so parallel guesses cannot outrun the limit of five), which
-- also refuses a sixth concurrent login of one account. So requests rotate
-- over many accounts: each thread owns a disjoint share of the e-mails in
-- the users file and cycles through them, keeping about one request per
-- account in flight.
-- Arguments after "--": users file (one e-mail a line), password, threads.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

setup = bench_number_threads

local bodies, next_body = {}, 1

function init(args)
  for _, email in ipairs(bench_thread_lines(args[1], tonumber(args[3]))) do
    bodies[#bodies + 1] = string.format('{"email":"%s","password":"%s"}', email, args[2])
  end
end

function request()
  local body = bodies[next_body]
  next_body = next_body % #bodies + 1
  return wrk.format("POST", "/api/auth/login", { ["Content-Type"] = "application/json" }, body)
end

done = bench_done
