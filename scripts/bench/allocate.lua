-- wrk script for scripts/bench.sh: realistic AllocationRequests (about 900 bytes, as DPS sends them).
-- BENCH_MIX=fleet (default), for the shipped policies: 60 % Fabrikam sensors (weighted hashing, tenant twin,
-- templated payload), 20 % Fabrikam vehicles reporting an IP (geo-latency through GeoIP), 10 % the
-- tutorial's toaster (static, twin), 10 % sensors re-registering (sticky).
-- BENCH_MIX=tutorial, for scripts/bench/tutorial (issue 15's set-up): half toasters, half heat pumps.
-- BENCH_IDS=N: N devices re-registering in rotation, the same body for a device each time (default 20000
-- for fleet, 1000 for tutorial). BENCH_IDS=0: every request a new device (an id never sent before in the run).

local mix = os.getenv("BENCH_MIX") or "fleet"
local n = tonumber(os.getenv("BENCH_IDS") or (mix == "tutorial" and "1000" or "20000"))
local bodies = {}
local i = 0
local thread_no = 0
-- BENCH_FIRST=K: the new devices of BENCH_IDS=0 count from K (a second run against the same server sends
-- devices it has not seen)
local first = tonumber(os.getenv("BENCH_FIRST") or "0")

local fabrikam = '["fabrikam-weu-1.azure-devices.net","fabrikam-neu-1.azure-devices.net",' ..
  '"fabrikam-eus-1.azure-devices.net","fabrikam-sea-1.azure-devices.net","fabrikam-eus-old.azure-devices.net"]'
local contoso = '["contoso-toasters-hub-1098.azure-devices.net","contoso-heatpumps-hub-1098.azure-devices.net"]'

local function enrollment(group, hubs)
  return '{"enrollmentGroupId":"' .. group .. '","attestation":{"type":"symmetricKey"},' ..
    '"capabilities":{"iotEdge":false},"etag":"\\"1b00f2e6-0000-0300-0000-65a1c5f40000\\"",' ..
    '"provisioningStatus":"enabled","reprovisionPolicy":{"updateHubAssignment":true,"migrateDeviceData":true},' ..
    '"createdDateTimeUtc":"2026-01-12T15:04:36.2171549Z","lastUpdatedDateTimeUtc":"2026-01-12T15:04:36.2171549Z",' ..
    '"allocationPolicy":"custom","iotHubs":' .. hubs .. ',' ..
    '"customAllocationDefinition":{"webhookUrl":"https://contoso-alloc.azurewebsites.net/api/allocate?****","apiVersion":"2021-10-01"}}'
end

local tutorial_head = '{"enrollmentGroup":' .. enrollment("contoso-custom-allocated-devices", contoso) ..
  ',"deviceRuntimeContext":{"registrationId":"'
local tutorial_kinds = { "-contoso-tstrsd-007", "-contoso-hpsd-088" }
local tutorial_tail = '","symmetricKey":{},"payload":{"MyDeviceFirmwareVersion":"12.0.2.5",' ..
  '"MyDeviceProvisioningVersion":"1.0.0.0"}},"linkedHubs":' .. contoso .. '}'

local function fleet_body(k)
  local kind = k % 10
  if kind < 6 then
    return '{"enrollmentGroup":' .. enrollment("fabrikam-sensors", fabrikam) ..
      ',"deviceRuntimeContext":{"registrationId":"fab-sensor-' .. k .. '","symmetricKey":{},' ..
      '"payload":{"model":"th-200","firmware":{"channel":"stable","version":"4.2.1"}}},"linkedHubs":' .. fabrikam .. '}'
  elseif kind < 8 then
    local ip = (k % 2 == 0) and ("198.51.100." .. (k % 250)) or ("100.64." .. (k % 200) .. ".7")
    return '{"enrollmentGroup":' .. enrollment("fabrikam-vehicles", fabrikam) ..
      ',"deviceRuntimeContext":{"registrationId":"fab-truck-' .. k .. '","symmetricKey":{},' ..
      '"payload":{"ip":"' .. ip .. '","model":"fleet-7"}},"linkedHubs":' .. fabrikam .. '}'
  elseif kind < 9 then
    return '{"enrollmentGroup":' .. enrollment("contoso-custom-allocated-devices", contoso) ..
      ',"deviceRuntimeContext":{"registrationId":"breakroom' .. k .. '-contoso-tstrsd-007","symmetricKey":{},' ..
      '"payload":{"MyDeviceFirmwareVersion":"12.0.2.5","MyDeviceProvisioningVersion":"1.0.0.0"}},"linkedHubs":' .. contoso .. '}'
  else
    return '{"enrollmentGroup":' .. enrollment("fabrikam-sensors", fabrikam) ..
      ',"deviceRuntimeContext":{"registrationId":"fab-sensor-' .. k .. '","symmetricKey":{},' ..
      '"currentIotHubHostName":"fabrikam-neu-1.azure-devices.net","currentDeviceId":"fab-sensor-' .. k .. '",' ..
      '"payload":{"model":"th-200"}},"linkedHubs":' .. fabrikam .. '}'
  end
end

local function body(k)
  if mix == "tutorial" then
    return tutorial_head .. "breakroom" .. k .. tutorial_kinds[k % 2 + 1] .. tutorial_tail
  end
  return fleet_body(k)
end

setup = function(thread)
  thread:set("thread_no", thread_no)
  thread_no = thread_no + 1
end

init = function(args)
  for k = 1, n do
    bodies[k] = body(k)
  end
  -- BENCH_DUMP=FILE: also write the bodies, one per line (oha -Z reads them for the latency runs)
  local dump = os.getenv("BENCH_DUMP")
  if dump and thread_no == 0 then
    local f = assert(io.open(dump, "w"))
    for k = 1, n do
      f:write(bodies[k], "\n")
    end
    f:close()
  end
end

request = function()
  local b
  if n == 0 then
    -- a new device every request: the thread number keeps threads apart, the counter runs
    i = i + 1
    b = body(first + thread_no * 100000000 + i)
  else
    i = i % n + 1
    b = bodies[i]
  end
  return wrk.format("POST", "/api/allocate", { ["Content-Type"] = "application/json" }, b)
end

done = function(summary, latency, requests)
  local non2xx = summary.errors.status or 0
  io.write(string.format("BENCH requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d " ..
    "p50_us=%d p99_us=%d p999_us=%d\n",
    summary.requests, summary.duration, non2xx, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9)))
end
