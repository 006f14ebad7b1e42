from twisted.application.service import ServiceMaker

kaf = ServiceMaker("kaf", "kaf.tap", "Kaf: a small, fast event store over HTTP", "kaf")
