package sim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

type order struct {
	ID                int64       `json:"orderId"`
	SecretID          string      `json:"orderSecretId"`
	Type              string      `json:"orderType"`
	ExternalReference string      `json:"externalReference"`
	Created           string      `json:"created"`
	Lines             []orderLine `json:"lines"`
	Total             int64       `json:"total"` // thousandths of EUR
}

type orderLine struct {
	OperationID           int64  `json:"operationId"`
	ProductID             int64  `json:"productId"`
	ProductName           string `json:"productName"`
	PerformanceID         int64  `json:"performanceId"`
	SeatCategoryID        int64  `json:"seatCategoryId"`
	AudienceSubCategoryID int64  `json:"audienceSubCategoryId"`
	Quantity              int    `json:"quantity"`
	UnitPrice             int64  `json:"unitPrice"`
}

type singleEntryOperation struct {
	PerformanceID         int64 `json:"performanceId"`
	SeatCategoryID        int64 `json:"seatCategoryId"`
	AudienceSubCategoryID int64 `json:"audienceSubCategoryId"`
	Quantity              int   `json:"quantity"`
}

type orderRequest struct {
	PointOfSalesID                   *int64                 `json:"pointOfSalesId"`
	OrderID                          *int64                 `json:"orderId"`
	OrderType                        string                 `json:"orderType"`
	ExternalReference                string                 `json:"externalReference"`
	IsResumeAllOptionOperations      *bool                  `json:"isResumeAllOptionOperations"`
	IsResumeAllReservationOperations *bool                  `json:"isResumeAllReservationOperations"`
	SingleEntryAttributionOperations []singleEntryOperation `json:"singleEntryAttributionOperations"`
	ComposedProductOperations        []json.RawMessage      `json:"composedProductOperations"`
	SimpleProductOperations          []json.RawMessage      `json:"simpleProductOperations"`
	TransportProductOperations       []json.RawMessage      `json:"transportProductOperations"`
	ChargeOperations                 []json.RawMessage      `json:"chargeOperations"`
}

var catalogCurrency = map[string]any{"currencyCode": "EUR", "fractionDigit": 2, "minAmount": 10, "symbol": "€"}

// orderFailure is failure plus the order fields of OrderUpdateResult.
func (s *Server) orderFailure(code, message string) envelope {
	e := s.failure(code, message)
	e["orderUpdateData"], e["expectedException"] = nil, true
	return e
}

// createOrUpdateOrder implements single-entry sales (docs/S360.md, "Methods"). Stock
// is checked and taken for all lines at once, or not at all.
func (s *Server) createOrUpdateOrder(body []byte) (envelope, error) {
	var req orderRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	switch {
	case req.PointOfSalesID == nil:
		return s.orderFailure("error.parameter.mandatory", "pointOfSalesId is mandatory"), nil
	case *req.PointOfSalesID != s.posID:
		return s.orderFailure("error.pointofsales.unknown", fmt.Sprintf("unknown point of sales %d", *req.PointOfSalesID)), nil
	case req.OrderType == "":
		return s.orderFailure("error.parameter.mandatory", "orderType is mandatory"), nil
	case req.OrderType != "SALE" && req.OrderType != "RESERVATION" && req.OrderType != "OPTION":
		return s.orderFailure("error.order.type", "orderType "+req.OrderType+" is not supported by the simulator"), nil
	case req.IsResumeAllOptionOperations == nil || req.IsResumeAllReservationOperations == nil:
		return s.orderFailure("error.parameter.mandatory", "isResumeAllOptionOperations and isResumeAllReservationOperations are mandatory"), nil
	case len(req.SingleEntryAttributionOperations) == 0 && len(req.ComposedProductOperations)+len(req.SimpleProductOperations)+
		len(req.TransportProductOperations)+len(req.ChargeOperations) > 0:
		return s.orderFailure("error.order.operation", "only singleEntryAttributionOperations are simulated"), nil
	case len(req.SingleEntryAttributionOperations) == 0:
		return s.orderFailure("error.parameter.mandatory", "at least one operation list must be given"), nil
	}

	now := s.now()
	secret := make([]byte, 10)
	_, _ = rand.Read(secret)
	s.mu.Lock()
	defer s.mu.Unlock()
	var o *order
	if req.OrderID != nil {
		if o = s.orders[*req.OrderID]; o == nil {
			return s.orderFailure("error.order.unknown", fmt.Sprintf("unknown order %d", *req.OrderID)), nil
		}
	}
	type stockKey struct{ perf, seatCat int64 }
	wanted := map[stockKey]int{}
	for _, op := range req.SingleEntryAttributionOperations {
		perf := s.cat.perfByID[op.PerformanceID]
		switch {
		case op.Quantity <= 0 || op.Quantity > 1000:
			return s.orderFailure("error.parameter.invalid", "quantity must be between 1 and 1000"), nil
		case perf == nil:
			return s.orderFailure("error.performance.unknown", fmt.Sprintf("unknown performance %d", op.PerformanceID)), nil
		case perf.State != "RUNNING":
			return s.orderFailure("error.performance.not_on_sale", fmt.Sprintf("performance %d is %s", perf.ID, perf.State)), nil
		}
		if _, ok := perf.price(op.SeatCategoryID, op.AudienceSubCategoryID); !ok {
			return s.orderFailure("error.price.unknown", fmt.Sprintf("no price for seat category %d and audience subcategory %d",
				op.SeatCategoryID, op.AudienceSubCategoryID)), nil
		}
		wanted[stockKey{perf.ID, op.SeatCategoryID}] += op.Quantity
	}
	for k, n := range wanted {
		if s.cat.perfByID[k.perf].stock[k.seatCat] < n {
			return s.orderFailure("error.order.availability", "No more tickets available"), nil
		}
	}

	if o == nil {
		s.nextOrderID++
		o = &order{ID: s.nextOrderID, SecretID: hex.EncodeToString(secret), Type: req.OrderType,
			Created: iso(now), Lines: []orderLine{}}
		s.orders[o.ID] = o
		s.orderList = append(s.orderList, o)
	}
	if req.ExternalReference != "" {
		o.ExternalReference = req.ExternalReference
	}
	updates := []map[string]any{}
	for _, op := range req.SingleEntryAttributionOperations {
		perf := s.cat.perfByID[op.PerformanceID]
		perf.stock[op.SeatCategoryID] -= op.Quantity
		perf.product.lastUpdate = now.Truncate(time.Millisecond)
		unit, _ := perf.price(op.SeatCategoryID, op.AudienceSubCategoryID)
		s.nextOpID += 7
		o.Lines = append(o.Lines, orderLine{s.nextOpID, perf.product.ID, perf.product.name, perf.ID,
			op.SeatCategoryID, op.AudienceSubCategoryID, op.Quantity, unit})
		o.Total += unit * int64(op.Quantity)
		updates = append(updates, map[string]any{"operationId": s.nextOpID, "kind": "SINGLE_ENTRY",
			"quantity": op.Quantity, "basePrice": unit, "unitPrice": unit, "productId": perf.product.ID,
			"performanceId": perf.ID, "seatCategoryId": op.SeatCategoryID, "audienceSubCategoryId": op.AudienceSubCategoryID})
	}
	e := success("orderUpdateData", map[string]any{
		"orderId": o.ID, "orderSecretId": o.SecretID, "mainOperationId": updates[0]["operationId"],
		"operationDataUpdates": updates, "movementDataUpdates": []any{}, "removeOperationIds": []any{},
		"removeMovementIds": []any{}, "catalogCurrency": catalogCurrency,
	}, "statusMessage", nil, "expectedException", false)
	return e, nil
}
