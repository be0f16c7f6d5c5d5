// k6 smoke load on readiness (each request pings Postgres and Redis).
//   k6 run -e BASE_URL=http://127.0.0.1:8080 loadtests/health.js
import http from "k6/http";
import { check } from "k6";

export const options = {
  scenarios: {
    ready: { executor: "constant-arrival-rate", rate: 200, timeUnit: "1s", duration: "20s", preAllocatedVUs: 20 },
  },
  thresholds: { http_req_failed: ["rate<0.01"] },
};

const BASE = __ENV.BASE_URL || "http://127.0.0.1:8080";

export default function () {
  const res = http.get(`${BASE}/health/ready`);
  check(res, { "ready is 200": (r) => r.status === 200 });
}
