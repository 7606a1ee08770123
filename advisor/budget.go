package advisor

import (
	"cmp"
	"slices"
)

// dpCells bounds the exact knapsack's table (items × budget in pages): 32 Mi cells cost
// about 32 MiB of choice bits and a fraction of a second. Beyond it, greedy.
const dpCells = 32 << 20

// choose picks the items that maximise the sum of values with the sum of weights (bytes,
// multiples of pageSize) within budget, and returns their indices in increasing order.
//
// Small inputs are solved exactly by dynamic programming over the budget in pages. Large
// ones (a hot set of many files under a budget of many gigabytes) take items greedily
// by value per byte, then compare with the single most valuable item that fits, which
// keeps the greedy answer within a factor of two of the optimum; with values proportional
// to bytes, as expected savings are, greedy is close to exact anyway.
func choose(weights []int64, values []float64, budget int64) []int {
	var total int64
	for _, w := range weights {
		total += w
	}
	if budget <= 0 || total <= budget {
		return allIndices(len(weights))
	}
	capPages := budget / pageSize
	if int64(len(weights))*(capPages+1) <= dpCells {
		return chooseExact(weights, values, capPages)
	}
	return chooseGreedy(weights, values, budget)
}

func chooseExact(weights []int64, values []float64, capPages int64) []int {
	best := make([]float64, capPages+1)
	take := make([][]bool, len(weights))
	for i, w := range weights {
		wp := (w + pageSize - 1) / pageSize
		take[i] = make([]bool, capPages+1)
		for c := capPages; c >= wp; c-- {
			if v := best[c-wp] + values[i]; v > best[c] {
				best[c] = v
				take[i][c] = true
			}
		}
	}
	var out []int
	c := capPages
	for i := len(weights) - 1; i >= 0; i-- {
		if take[i][c] {
			out = append(out, i)
			c -= (weights[i] + pageSize - 1) / pageSize
		}
	}
	slices.Reverse(out)
	return out
}

func chooseGreedy(weights []int64, values []float64, budget int64) []int {
	order := allIndices(len(weights))
	density := func(i int) float64 { return values[i] / float64(max(weights[i], 1)) }
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(density(b), density(a)) })
	var out []int
	var used int64
	var sum float64
	single, singleValue := -1, 0.0
	for _, i := range order {
		if weights[i] <= budget && values[i] > singleValue {
			single, singleValue = i, values[i]
		}
		if used+weights[i] <= budget {
			out = append(out, i)
			used += weights[i]
			sum += values[i]
		}
	}
	if singleValue > sum {
		return []int{single}
	}
	slices.Sort(out)
	return out
}

func allIndices(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}
